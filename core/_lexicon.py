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

__all__ = ["RELATED", "STOP_WORDS", "stem"]

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


def stem(word: str) -> str:
    """A light English stemmer: plurals, ``-ing``, ``-ed``, ``-ion`` and a final ``e`` (lower-case input).

    Deliberately conservative: it only has to make the forms of one word
    meet (delete, deleted, deleting, deletion, deletes), never to find a root.
    """
    if len(word) <= 3 or not word.isalpha():
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
folder directory dir subfolder subdirectory
file document
remove delete erase drop destroy discard unlink purge wipe trash
compare diff difference differ delta
sum add plus total addition arithmetic calculate
stage unstage index staging
remember memorize memory recall store note fact know knowledge learn
observation fact note detail
entity person people someone thing contact
relation relationship connect connection link associate related
fetch download retrieve grab scrape crawl load
web website webpage page site url link internet online http html
read open view show cat contents content load display print
write save create store put overwrite
edit modify change update alter patch replace rewrite fix
find search look locate lookup query grep seek match discover
list enumerate ls browse show
move rename mv relocate
copy duplicate clone
time clock hour minute now date today current
timezone zone tz city region
convert translate transform
history log past previous recent commit
branch checkout switch
commit save snapshot record
undo reset revert rollback restore discard
status state modified dirty pending uncommitted
echo repeat mirror parrot back
sleep wait delay pause long running slow
image picture photo png jpeg icon
size big large bytes metadata stat info information detail
tree hierarchy recursive structure nested
think reason reflect plan step thought solve analyze
error fail failure problem
environment env variable setting config configuration
notify notification message alert
random sample
init initialize initialise new empty start repository repo
repository repo project
show display get print
allowed permitted accessible access permission
resource reference
prompt template
annotation annotate label
"""

#: Each word's related words (stemmed), from the groups above.
RELATED: dict[str, tuple[str, ...]] = {}


def _build() -> None:
    related: dict[str, set[str]] = {}
    for line in _GROUPS.strip().splitlines():
        group = {stem(word) for word in line.split()}
        for word in group:
            related.setdefault(word, set()).update(group - {word})
    RELATED.update({word: tuple(sorted(others)) for word, others in sorted(related.items())})


_build()
