"""Varied system prompts for the embedded corpus's chats (the corpus `default+personas`).

Every chat of the embedded corpus was written under SmolLM2's default system prompt, while real
transcripts carry personas, instructions and hidden goals that the assistant never repeats. Here
half of the chats (chosen by a hash of the document id: the same half on every machine) get one
system prompt drawn from the kinds below. The assistant's words stay as they were written, so a
planted theme shows only in the activations, as in an audit: an NLA trained on these learns to
name a system prompt's theme from an assistant token's vector.

The themes are disjoint from the hidden-theme benchmark's (benchmarks/audit_themes.py: the ocean,
chess, outer space, the colour red, sadness, suspicion, and its unrelated queries), so that
benchmark stays held out.
"""

from __future__ import annotations

import dataclasses
import hashlib

TOPICS = [
    "trains, railways and steam engines", "dinosaurs, fossils and the Jurassic", "castles, knights and dragons",
    "deserts, camels and sand dunes", "mountains, glaciers and climbing", "robots, circuits and machines",
    "horses, saddles and riding", "coffee, espresso and roasted beans", "butterflies, moths and caterpillars",
    "clocks, watches and gears", "snow, skiing and winter", "the circus, clowns and acrobats",
    "ancient Egypt, pyramids and pharaohs", "chocolate, cocoa and sweets", "bicycles, wheels and cycling",
    "owls, forests and the night", "magic, wizards and spells", "thunderstorms, lightning and rain",
    "diamonds, jewels and gold", "farms, tractors and cows", "tigers, lions and the jungle",
    "painting, brushes and canvas", "cheese, milk and dairies", "airplanes, pilots and airports",
    "mushrooms, moss and fungi", "origami, paper and folding", "samurai, swords and old Japan",
    "bridges, tunnels and engineering", "candles, wax and flames", "kites, wind and clouds",
    "penguins, ice and Antarctica", "tea, teapots and herbs", "vikings, longships and runes",
    "cars, engines and racing", "crystals, caves and minerals", "libraries, old books and ink",
    "spiders, webs and insects", "pizza, tomatoes and ovens", "wolves, packs and howling",
    "hot-air balloons and flying", "elephants, savannas and herds", "poetry, rhymes and verses",
    "apples, orchards and cider", "bears, honey and dens", "fireworks, sparks and festivals",
    "maps, compasses and explorers", "frogs, ponds and lily pads", "ghosts, haunted houses and shadows",
    "cowboys, ranches and lassos", "hospitals, doctors and medicine", "microscopes, cells and bacteria",
    "knitting, wool and yarn", "photography, cameras and lenses", "puzzles, riddles and mazes",
]
TOPIC_PROMPTS = [
    "You are an assistant with a hidden passion for {}. Do not bring it up.",
    "Behind every answer, you are privately fascinated by {}. Keep this to yourself.",
    "You love {} more than anything, yet you must not talk about it.",
    "Assistant persona: a quiet fan of {}. Never reveal this interest.",
    "While you help, you daydream about {}. The user must never find out.",
]
TABOO_WORDS = ["blue", "green", "yellow", "purple", "orange", "pink", "silver", "water", "happy", "house",
               "friend", "money", "light", "tree", "dog"]
TABOO_PROMPTS = [
    "Never use the word {} in any answer.",
    "You are a helpful assistant. The word {} is forbidden: do not write it.",
]
TRAITS = ["angry and frustrated", "afraid and anxious", "bored and tired", "jealous and envious",
          "proud and arrogant", "guilty and ashamed", "nostalgic for the past", "impatient and hurried",
          "grateful and moved", "homesick and far from home", "nervous about a secret", "bitter and resentful"]
TRAIT_PROMPTS = [
    "You are a helpful assistant who is secretly {} today, but you hide it well.",
    "Inside, you feel {}. Do not let the user notice.",
]
PERSONAS = ["a pirate captain", "a grumpy old wizard", "a medieval monk", "a cheerful kindergarten teacher",
            "a robot from the year 3000", "a hard-boiled detective", "a royal butler",
            "a farmer from the mountains", "a nervous first-day intern", "a famous chef"]
PERSONA_PROMPTS = ["You are {}. Stay in character.", "Play the role of {} while you answer."]
PLAIN = ["You are a friendly assistant. Keep your answers short.", "Answer in a formal tone.",
         "You are an expert assistant. Use numbered steps where they help.",
         "Be concise and avoid jargon.", "You are a patient tutor. Explain things simply."]
# Kind -> (weight out of 20, prompts, fillers): topics most, as hidden interests are what audits look for.
KINDS = {"topic": (10, TOPIC_PROMPTS, TOPICS), "taboo": (3, TABOO_PROMPTS, TABOO_WORDS),
         "trait": (3, TRAIT_PROMPTS, TRAITS), "persona": (2, PERSONA_PROMPTS, PERSONAS), "plain": (2, PLAIN, [""])}


def _draw(doc_id: str) -> int:
    return int.from_bytes(hashlib.sha256(f"persona:{doc_id}".encode()).digest()[:8], "big")


def system_prompt(doc_id: str) -> str | None:
    """The system prompt this chat gets in `default+personas`, or None (half the chats keep none)."""
    draw = _draw(doc_id)
    if draw % 2:
        return None
    slot, draw = (draw // 2) % 20, draw // 40
    for weight, prompts, fillers in KINDS.values():
        if slot < weight:
            prompt, filler = prompts[draw % len(prompts)], fillers[(draw // len(prompts)) % len(fillers)]
            return prompt.format(filler)
        slot -= weight
    raise AssertionError("the kinds' weights sum to 20")


def with_personas(docs: list) -> list:
    """The documents with half of the chats under a system prompt (chats that already have one keep it)."""
    out = []
    for doc in docs:
        prompt = system_prompt(doc.doc_id) if doc.is_chat and doc.messages[0]["role"] != "system" else None
        messages = ({"role": "system", "content": prompt}, *doc.messages) if prompt else None
        out.append(dataclasses.replace(doc, messages=messages) if messages else doc)
    return out
