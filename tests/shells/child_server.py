"""A tiny stand-in for a downstream server, driven by its arguments.

Modes (first argument):
  echo         copy every stdin line to stdout until EOF
  stderr N     write N numbered lines to stderr, then echo
  exit CODE    exit with CODE at once
  kill-self    SIGKILL itself
  stubborn     ignore SIGTERM and stdin EOF; sleep
  deaf         never read stdin; sleep
  long N       write one N-byte line, then the line {"after":true}, then echo
  close-stdin  close stdin and sleep
"""

import os
import signal
import sys
import time

mode = sys.argv[1]
out = sys.stdout.buffer


def echo() -> None:
    for line in sys.stdin.buffer:
        out.write(line)
        out.flush()


if mode == "echo":
    echo()
elif mode == "stderr":
    for i in range(int(sys.argv[2])):
        sys.stderr.write(f"line {i} on stderr\n")
    sys.stderr.flush()
    echo()
elif mode == "exit":
    sys.exit(int(sys.argv[2]))
elif mode == "kill-self":
    os.kill(os.getpid(), signal.SIGKILL)
elif mode == "stubborn":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    out.write(b'{"ready":true}\n')
    out.flush()
    time.sleep(60)
elif mode == "deaf":
    out.write(b'{"ready":true}\n')
    out.flush()
    time.sleep(60)
elif mode == "long":
    out.write(b'"' + b"x" * int(sys.argv[2]) + b'"\n')
    out.write(b'{"after":true}\n')
    out.flush()
    echo()
elif mode == "close-stdin":
    os.close(0)
    out.write(b'{"ready":true}\n')
    out.flush()
    time.sleep(60)
