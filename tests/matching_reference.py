"""Reference implementations of MetaCLIP's substring matching, for tests and the benchmark.

`metaclip_match` is MetaCLIP's own way (metaclip/substr_matching.py): pyahocorasick, an
automaton with (idx, key) values, one Python call per text. `brute_force_match` needs no
automaton at all: " e " occurs in the spaced text exactly when e is the text between two of its
spaces, so it looks up every such span in a dict.
"""

from __future__ import annotations


def metaclip_spacing(text: str) -> str:
    puncts_to_wrap = [",", ".", ";", ":", "?", "!", "`"]
    chars_to_space = ["\t", "\n", "\r"]
    spaced_text = f" {text} "
    for punct_to_wrap in puncts_to_wrap:
        spaced_text = spaced_text.replace(punct_to_wrap, f" {punct_to_wrap} ")
    for char_to_space in chars_to_space:
        spaced_text = spaced_text.replace(char_to_space, " ")
    return spaced_text


def metaclip_automaton(entries: list[str]):
    import ahocorasick

    automaton = ahocorasick.Automaton()
    for idx, key in enumerate(f" {entry} " for entry in entries):
        automaton.add_word(key, (idx, key))
    automaton.make_automaton()
    return automaton


def metaclip_match(automaton, text: str) -> list[int]:
    matched_entry_ids = set()
    for end_index, (entry_id, original_value) in automaton.iter(metaclip_spacing(text)):
        matched_entry_ids.add(entry_id)
    return list(matched_entry_ids)


def brute_force_match(texts, entries: list[str], normalize=lambda s: s) -> list[list[int]]:
    ids_of: dict[str, list[int]] = {}
    for entry_id, entry in enumerate(entries):
        ids_of.setdefault(normalize(entry), []).append(entry_id)
    longest = max(map(len, ids_of), default=0)
    result = []
    for text in texts:
        spaced = metaclip_spacing(normalize(text or ""))
        spaces = [i for i, ch in enumerate(spaced) if ch == " "]
        found = set()
        for k, i in enumerate(spaces):
            for j in spaces[k + 1:]:
                if j - i - 1 > longest:
                    break
                found.update(ids_of.get(spaced[i + 1:j], ()))
        result.append(sorted(found))
    return result
