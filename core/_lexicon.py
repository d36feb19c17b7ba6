"""The words tool search reads: stop words, a light stemmer, and related words.

Agents name a need in their own words ("remove the folder"), tools describe
themselves in theirs ("Delete a directory"). Plain BM25 misses every such
pair, so a query word also matches the words of its group below, at a lower
weight (see :mod:`._search`). The groups are the vocabulary of what MCP
servers do (files, version control, the web, memory, time, arithmetic,
messages, processes), written for that domain: a general thesaurus such as
WordNet links neither folder with directory nor remove with delete, and
links fetch with bring.

A group is a set of words an agent may use for one thing; a word may be in
several groups. Keep groups narrow: a word that relates to everything
ranks nothing.
"""

from __future__ import annotations

__all__ = ["PHRASES", "RELATED", "STOP_WORDS", "stem"]

STOP_WORDS = frozenset(
    """
    a about above after again all also am an and any are as at be been before being below between both but by
    can could did do does doing down during each few for from further had has have having he her here hers him his
    how i if in into is it its itself just let lets me more most my myself no nor not now of off on once only or
    other our ours out over own please same she should so some such than that the their theirs them then there
    these they this those through to too under until up very was we were what when where which while who whom why
    will with would you your yours yourself want need needs like using use via tool tools
    """.split()
)

_VOWELS = frozenset("aeiouy")
#: Words whose ending is not an inflection ("times" is not several times of day).
_KEEP = frozenset("times news series status analysis address access process class alias canvas always".split())


def stem(word: str) -> str:
    """A light English stemmer: plurals, ``-ing``, ``-ed``, ``-ion`` and a final ``e`` (lower-case input).

    Deliberately conservative: it only has to make the forms of one word
    meet (delete, deleted, deleting, deletion, deletes), never to find a root.
    """
    if len(word) <= 3 or not word.isalpha() or word in _KEEP:
        return word
    if word.endswith("ies") and len(word) > 4:
        word = word[:-3] + "y"
    elif word.endswith(("sses", "shes", "ches", "xes", "zes")):
        word = word[:-2]
    elif word.endswith("s") and not word.endswith(("ss", "us", "is")):
        word = word[:-1]
    for suffix in ("ing", "ed"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3 and _VOWELS & set(word[: -len(suffix)]):
            word = word[: -len(suffix)]
            if len(word) > 3 and word[-1] == word[-2] and word[-1] not in "lsz":
                word = word[:-1]
            break
    else:
        if word.endswith("ation") and len(word) > 7:
            word = word[:-3]
        elif word.endswith("ion") and len(word) > 6 and word[-4] in "st":
            word = word[:-3]
    if word.endswith("e") and len(word) > 4:
        word = word[:-1]
    return word


_GROUPS = """
file document
folder directory dir subfolder subdirectory mkdir
remove delete erase drop destroy discard unlink purge wipe trash forget
compare comparison diff difference differ delta versus change bigger smaller greater larger
add plus sum total addition
subtract minus subtraction deduct less away
multiply times product multiplication
divide division quotient ratio split
remainder modulo mod modulus leftover left
power exponent raise squared cube
sqrt square root
percentage percent proportion fraction share
average mean
median middle percentile
mode frequent common often commonest
max maximum largest biggest highest greatest top
min minimum smallest lowest least fewest
range spread span
number value figure digit numeric integer float amount
calculate compute calculator arithmetic math evaluate expression formula
stage staging include track add
unstage reset undo revert rollback restore
commit check checkin snapshot record
history log past previous recent blame
show display view print
branch feature
checkout switch
status state clean dirty modified untracked working pending
repository repo project codebase
tag version release
pull pr merge request
review approve
issue ticket bug report
comment reply respond remark
fork copy duplicate clone
push upload publish
user account profile people person someone member
query sql select statement database db
table schema column row record
insert write update modify
describe structure schema columns
insight memo note
read open view cat contents content load print
write create save store put overwrite
create new make open start
edit modify change update alter patch replace rewrite fix
find search look locate lookup grep seek match discover glob pattern
list enumerate ls browse inside available
move rename mv relocate
image photo picture media audio video png jpeg
size metadata stat info information permission timestamp
tree hierarchy recursive nested structure layout
allowed permitted accessible access reach root
fetch download retrieve grab scrape crawl get
web website webpage page site url link internet online http html browser
remember memory recall store memorize knowledge fact know learn graph
entity node thing person people
relation relationship link connect connection associate related between
observation fact detail note
time clock hour now current today date
timezone zone city local
convert translate transform
elicitation elicit ask prompt question input form dialog
sampling sample model llm completion generate
login sign authenticate auth
pdf document
run execute command shell script terminal bash launch
think reason plan step thought solve reflect reasoning
echo repeat
environment env variable setting config configuration
long running progress operation slow task
logging log message
subscribe subscription update notify notification watch
resource reference
annotation annotate
compress gzip zip archive
everything whole entire all complete full dump
toggle enable disable switch turn
research investigate study explore
api endpoint http rest request call
install build compile deploy run
ci check build pipeline status
wildcard glob pattern
uncommitted local pending unsaved
close reopen update
label assign assignee milestone update
break complex problem
ask question user person
llm model ai assistant
download save
random sample
multiple several many batch together bulk
"""

#: Shell and everyday abbreviations that stand for several words of a tool's own ("mkdir" is "create directory").
_PHRASES = """
mkdir create directory
rmdir remove directory
ls list directory
rm remove file
cat read file
pr pull request
mv move file
cp copy file
cwd current directory
du directory size
stat file info
grep search file

pwd current directory
"""

#: Each abbreviation's words (stemmed), from the list above.
PHRASES: dict[str, tuple[str, ...]] = {}

#: Each word's related words (stemmed), from the groups above.
RELATED: dict[str, tuple[str, ...]] = {}


def _build() -> None:
    related: dict[str, set[str]] = {}
    for line in _GROUPS.strip().splitlines():
        group = {stem(word) for word in line.split()}
        for word in group:
            related.setdefault(word, set()).update(group - {word})
    RELATED.update({word: tuple(sorted(others)) for word, others in sorted(related.items())})
    for line in _PHRASES.strip().splitlines():
        if not line.strip():
            continue
        short, *meaning = line.split()
        PHRASES[short] = tuple(stem(word) for word in meaning)


_build()
