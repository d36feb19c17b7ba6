// Preloaded into the conformance suite's Node process by run.py (NODE_OPTIONS=--require).
//
// The suite's `server` command is a client: at 0.2.0-alpha.12 it connects to
// the URL it is given and binds nothing (strace -e bind,listen saw no call).
// Its client scenarios do start servers, on every interface. Should a later
// version open a port in the `server` leg too, it throws here and the run
// fails, instead of listening beyond 127.0.0.1.
"use strict";
const net = require("node:net");

net.Server.prototype.listen = function listen() {
  throw new Error("the conformance suite tried to listen on a port; see conformance/official/no_listen.cjs");
};
