"""The project's own text tokenizer, built offline and deterministically with the `tokenizers` library.

Layout of the vocabulary (ids):
    0..5                      special tokens <pad> <eos> <bos> <unk> <image> <sep>
    6..text_vocab_size-1      byte-level BPE trained on a generated corpus (+ <unused_k> fillers to reach the size)
    text_vocab_size..+N-1     N reserved action tokens <act_0> ... <act_{N-1}> (top of the vocabulary, like
                              pi0-FAST's action tokens at the top of PaliGemma's vocabulary)

The corpus covers what the model will read: task instructions (pick/place/move/open/... templates over
objects, colours and places), ETC questions and answers with integer coordinates, boxes and trajectories in
brackets, plans, and the action prompt format ("Task: ..., State: 12 250 ...;\\n", "Action: ", "Answer: ").
Digits are split one by one (numbers never become single tokens), byte-level fallback means any text encodes.

For a real PaliGemma checkpoint the checkpoint's own tokenizer.json is used instead (see vla.py).
"""
from __future__ import annotations

import random
from typing import Iterable, Sequence

from etc_ros.core.errors import ModelError

PAD, EOS, BOS, UNK, IMAGE, SEP = "<pad>", "<eos>", "<bos>", "<unk>", "<image>", "<sep>"
SPECIAL_TOKENS: tuple[str, ...] = (PAD, EOS, BOS, UNK, IMAGE, SEP)
ACTION_TOKEN_FMT = "<act_{}>"
UNUSED_TOKEN_FMT = "<unused_{}>"

_COLORS = ("red", "green", "blue", "yellow", "orange", "purple", "pink", "white", "black", "brown", "gray",
           "silver", "wooden", "metal", "plastic", "small", "large", "striped")
_OBJECTS = ("cube", "block", "bowl", "plate", "cup", "mug", "spoon", "fork", "knife", "sponge", "towel", "cloth",
            "carrot", "eggplant", "banana", "apple", "corn", "pepper", "lemon", "bottle", "can", "lid", "pot",
            "pan", "drawer", "box", "basket", "marker", "pen", "toy", "ball", "brush", "tray", "rack", "sink",
            "microwave", "cabinet", "door", "knob", "faucet", "button", "shelf", "container", "tape", "spatula")
_PLACES = ("in the bowl", "on the plate", "in the sink", "on the towel", "in the basket", "in the drawer",
           "on the left side of the table", "on the right side of the table", "in front of the cup",
           "behind the box", "next to the pot", "into the pan", "onto the tray", "on top of the block",
           "in the top left corner", "in the bottom right corner", "near the robot", "far from the robot")
_VERBS_OBJ = ("pick up", "grasp", "lift", "push", "pull", "open", "close", "flip", "wipe", "fold", "unfold",
              "turn on", "turn off", "knock over", "sweep", "stack", "rotate", "slide", "press", "touch")
_VERBS_PLACE = ("put", "place", "move", "drop", "set", "stack", "transfer", "relocate")
_DIRECTIONS = ("left", "right", "up", "down", "forward", "backward", "to the left of", "to the right of",
               "in front of", "behind", "above", "below", "on top of", "inside", "next to", "near", "far from")
_QUESTIONS = (
    "Where is the {o}?", "Point to the {o}.", "Give the bounding box of the {o}.", "Detect the {o}.",
    "Where is the {o} relative to the {r}?", "Where is the gripper relative to the {o}?",
    "What should the scene look like when the task is done?", "List the objects on the table from left to right.",
    "Where should the gripper grasp the {o}?", "Where should the {o} be placed?",
    "List the steps the robot should take, in order.", "What should the robot do next?",
    "Is the task complete? Answer yes or no.", "Predict the gripper trajectory as {n} waypoints [[x, y, g], ...].",
    "Answer with [x, y] on a 0-1023 grid.", "Answer with [x1, y1, x2, y2] on a 0-1023 grid.",
    "Which object is closest to the gripper?", "How many objects are on the table?",
)


_WORDS = tuple("""
the a an and or but if then so because while when where which what who how why is are was were be been has have
had do does did can could should would will may might must not no yes this that these those it its they them
their there here of to in on at by for from with without into onto over under above below between behind near far
left right front back top bottom middle center corner side edge up down forward backward around through across
robot arm gripper hand finger camera image scene table workspace object objects task goal step steps plan next
first second third last then after before until done complete finished open closed close grasp release hold
move moving moved put place placed pick picked push pull lift lower raise turn rotate slide drop stack reach
approach align insert remove clean wipe pour fill empty sort arrange gather find look see point show give
describe list name count predict estimate trajectory path waypoint waypoints position location box point
distance height width depth angle speed slowly quickly carefully gently small large big tiny long short tall
flat round square soft hard heavy light empty full clean dirty new old other another each every all some any
one two three four five six seven eight nine ten many few more most less least same different similar
kitchen sink stove counter shelf cabinet drawer door window floor wall room house office desk chair
food fruit vegetable tool toy cloth paper book phone bottle glass water coffee tea bread cheese egg
answer question instruction action state please first then finally also only just very again still already
""".split())


def _sentence(rng: random.Random) -> str:
    words = [rng.choice(_WORDS) for _ in range(rng.randint(4, 14))]
    return " ".join(words).capitalize() + rng.choice((".", "?", "!", ","))


def _num(rng: random.Random, hi: int = 1023) -> str:
    return str(rng.randint(0, hi))


def _instruction(rng: random.Random) -> str:
    a = f"{rng.choice(_COLORS)} {rng.choice(_OBJECTS)}"
    kind = rng.randrange(4)
    if kind == 0:
        return f"{rng.choice(_VERBS_OBJ)} the {a}"
    if kind == 1:
        return f"{rng.choice(_VERBS_PLACE)} the {a} {rng.choice(_PLACES)}"
    if kind == 2:
        return f"move the {a} {rng.choice(_DIRECTIONS)} the {rng.choice(_OBJECTS)}"
    return (f"{rng.choice(_VERBS_OBJ)} the {rng.choice(_OBJECTS)} "
            f"and {rng.choice(_VERBS_PLACE)} it {rng.choice(_PLACES)}")


def _answer(rng: random.Random) -> str:
    kind = rng.randrange(8)
    if kind == 0:
        return f"[{_num(rng)}, {_num(rng)}]"
    if kind == 1:
        return f"[{_num(rng)}, {_num(rng)}, {_num(rng)}, {_num(rng)}]"
    if kind == 2:
        n = rng.randint(3, 6)
        return "[" + ", ".join(f"[{_num(rng)}, {_num(rng)}, {rng.randint(0, 1)}]" for _ in range(n)) + "]"
    if kind == 3:
        return f"The {rng.choice(_OBJECTS)} is {rng.choice(_DIRECTIONS)} the {rng.choice(_OBJECTS)}."
    if kind == 4:
        steps = [_instruction(rng) for _ in range(rng.randint(2, 4))]
        return " ".join(f"{i + 1}. {s}." for i, s in enumerate(steps))
    if kind == 5:
        return rng.choice(("yes", "no", "Yes.", "No."))
    if kind == 6:
        return ", ".join(rng.choice(_OBJECTS) for _ in range(rng.randint(1, 5)))
    return f"The {rng.choice(_COLORS)} {rng.choice(_OBJECTS)} is {rng.choice(_PLACES)}."


def generate_corpus(n: int = 8000, seed: int = 0) -> list[str]:
    """Deterministic list of training texts for the tokenizer."""
    rng = random.Random(seed)
    out: list[str] = []
    for _ in range(n):
        instr = _instruction(rng)
        kind = rng.randrange(5)
        if kind == 4:  # general English, so words outside the templates still get sensible merges
            out.append(_sentence(rng))
        elif kind == 0:  # the action prompt format
            state = " ".join(str(rng.randint(0, 255)) for _ in range(7))
            out.append(f"Task: {instr}, State: {state};\n")
            out.append("Action: ")
        elif kind == 1:  # ETC prompt / answer
            q = rng.choice(_QUESTIONS).format(o=rng.choice(_OBJECTS), r=rng.choice(_OBJECTS), n=rng.randint(3, 6))
            out.append(f"Task: {q};\n")
            out.append(f"Answer: {_answer(rng)}")
        elif kind == 2:
            q = rng.choice(_QUESTIONS).format(o=rng.choice(_OBJECTS), r=rng.choice(_OBJECTS), n=5)
            out.append(f"Task: The task is: {instr}. {q};\n")
        else:
            out.append(instr[0].upper() + instr[1:] + rng.choice((".", "", "!", "?")))
    return out


def build_text_tokenizer(
    vocab_size: int = 2048,
    n_action_tokens: int = 1024,
    extra_texts: Iterable[str] = (),
    corpus_size: int = 8000,
    seed: int = 0,
):
    """Train the byte-level BPE and return a `tokenizers.Tokenizer` with exactly
    vocab_size + n_action_tokens ids (action tokens on top). Same arguments -> same tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    if vocab_size < len(SPECIAL_TOKENS) + 256 + 16:
        raise ModelError(f"text vocab_size {vocab_size} is too small (byte alphabet alone needs 256 + specials)")
    if n_action_tokens < 0:
        raise ModelError(f"n_action_tokens must be >= 0, got {n_action_tokens}")
    texts = generate_corpus(corpus_size, seed) + [str(t) for t in extra_texts]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer, length=len(texts))
    have = tok.get_vocab_size(with_added_tokens=True)
    if have > vocab_size:  # pragma: no cover - the trainer respects vocab_size
        raise ModelError(f"tokenizer trainer produced {have} > {vocab_size} tokens")
    if have < vocab_size:
        tok.add_special_tokens([UNUSED_TOKEN_FMT.format(i) for i in range(vocab_size - have)])
    if n_action_tokens:
        tok.add_special_tokens([ACTION_TOKEN_FMT.format(i) for i in range(n_action_tokens)])
    total = tok.get_vocab_size(with_added_tokens=True)
    first = tok.token_to_id(ACTION_TOKEN_FMT.format(0)) if n_action_tokens else vocab_size
    if total != vocab_size + n_action_tokens or first != vocab_size:
        raise ModelError(f"tokenizer layout broken: {total} ids, first action id {first}")  # pragma: no cover
    for i, s in enumerate(SPECIAL_TOKENS):
        if tok.token_to_id(s) != i:  # pragma: no cover
            raise ModelError(f"special token {s} did not get id {i}")
    return tok


def tokenizer_fingerprint(tok) -> str:
    """SHA-256 of the serialized tokenizer (equal fingerprints = identical tokenizers)."""
    import hashlib

    return hashlib.sha256(tok.to_str().encode("utf-8")).hexdigest()


def vocab_list(tok) -> Sequence[str]:
    """Tokens ordered by id."""
    vocab = tok.get_vocab(with_added_tokens=True)
    out = [""] * len(vocab)
    for s, i in vocab.items():
        out[i] = s
    return out
