"""The sample sets: a deterministic generator of small, learnable datasets under ``data/samples/``.

Run ``python -m rayformers.data.sample_sets [--out DIR] [--seed N]``. Every set is drawn from fixed lexicons and
templates by its own ``random.Random``, so two runs write byte-identical files and the committed copy can
be checked against a fresh one. Labels are carried by the words (no label noise), so a 2-layer transformer
trained from scratch on CPU learns them: these sets exercise the pipeline, they do not benchmark models.
Lexicons are ``|``-separated strings so that the vocabulary reads as data, not as code.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import random
import re
from collections.abc import Callable
from pathlib import Path

DEFAULT_OUT = Path(__file__).resolve().parent / "samples"
DEFAULT_SEED = 1234

Row = dict[str, object]
RowMaker = Callable[[random.Random, int], Row]


def _phrases(text: str) -> list[str]:
    return text.split("|")


_FIRST_NAMES = _phrases("Alice|Bruno|Carmen|David|Elena|Farid|Grace|Hiro|Ines|Jonas")
_FIRST_NAMES += _phrases("Kofi|Lena|Mateo|Nadia|Omar|Priya|Rosa|Sven|Tara|Yara")
_LAST_NAMES = _phrases("Smith|Okafor|Tanaka|Garcia|Novak|Larsen|Haddad|Mensah|Silva|Chen")
_ORGS = _phrases("Acme Corp|Globex|Initech|Blue River Bank|Northwind Traders|Vandelay Industries|Hooli")
_ORGS += _phrases("Umbrella Labs|Orbit Air|Green Valley Foods|Nova Systems|Silver Lake Capital")
_LOCATIONS = _phrases("Paris|Berlin|Lagos|Tokyo|Lima|Oslo|Cairo|Toronto|New York|San Francisco")
_LOCATIONS += _phrases("Buenos Aires|Cape Town|Rio de Janeiro|Kuala Lumpur")
_SYLLABLES = _phrases("ka|lo|ven|dra|mir|tos|zel|ori|pha|quen|bar|sil|tu|ne")
_DAYS = _phrases("Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday")


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _person(rng: random.Random) -> str:
    return f"{rng.choice(_FIRST_NAMES)} {rng.choice(_LAST_NAMES)}"


def _coin(rng: random.Random, syllables: int = 0) -> str:
    """A made-up word, so fictional entities never collide with what a pretrained model may know."""
    return "".join(rng.choice(_SYLLABLES) for _ in range(syllables or rng.randint(2, 3)))


# --- sentiment: the polarity lexicons never overlap, so the label is always in the words -------------
_DOMAINS = {  # subjects, nouns, intros
    "movie": (
        _phrases("the movie|this film|the plot|the acting|the soundtrack|the ending|the cast"),
        _phrases("movie|film|story|performance|sequel"),
        _phrases("We watched it last night|I saw it at the cinema|My friends picked this one"),
    ),
    "product": (
        _phrases("this phone|the blender|the laptop|the camera|this vacuum cleaner|the kettle"),
        _phrases("phone|gadget|purchase|device|product"),
        _phrases("I bought it last month|It arrived on Monday|I have used it for a week"),
    ),
    "restaurant": (
        _phrases("the restaurant|the pasta|the service|the dessert|our waiter|the soup|the pizza"),
        _phrases("restaurant|meal|dinner|place|menu"),
        _phrases("We went there on Friday|We booked a table for two|I had lunch there today"),
    ),
}
_POLARITY = {  # adjectives, closings
    "positive": (
        _phrases("great|wonderful|excellent|delightful|superb|fantastic|amazing|lovely|brilliant|charming")
        + _phrases("enjoyable|impressive|pleasant|outstanding"),
        _phrases("I would happily recommend it|worth every penny|I loved every minute|a real pleasure"),
    ),
    "negative": (
        _phrases("terrible|awful|boring|dreadful|horrible|disappointing|poor|bland|mediocre|annoying")
        + _phrases("dull|frustrating|unpleasant|forgettable"),
        _phrases("I want my money back|a complete waste of time|I regret it|a total letdown"),
    ),
}
_SENTIMENT_TEMPLATES = _phrases("{S} was {a}.|{S} was {a} and {b}.|I thought {s} was {a}.|This {n} was {a}!")
_SENTIMENT_TEMPLATES += _phrases("{S} was {a}, {c}.|{I}, and {s} was {a}.|{I}. Honestly, {s} was {b}, {c}.")


def _sentiment_text(rng: random.Random, label: str) -> str:
    subjects, nouns, intros = _DOMAINS[rng.choice(sorted(_DOMAINS))]
    adjectives, closings = _POLARITY[label]
    a, b = rng.sample(adjectives, 2)
    subject = rng.choice(subjects)
    template = rng.choice(_SENTIMENT_TEMPLATES)
    closing, intro, noun = rng.choice(closings), rng.choice(intros), rng.choice(nouns)
    return template.format(S=_cap(subject), s=subject, a=a, b=b, n=noun, c=closing, I=intro)


def _sentiment_row(rng: random.Random, index: int) -> Row:
    label = ("positive", "negative")[index % 2]
    return {"text": _sentiment_text(rng, label), "label": label}


# --- paraphrase: one fact, six wordings (3 orders x 2 verb synonyms); "different" changes one slot -----
_VERB_PAIRS = "bought/purchased|sold/traded|built/made|found/discovered|painted/decorated|ordered/requested"
_VERBS = [pair.split("/") for pair in _phrases(_VERB_PAIRS + "|delivered/brought|repaired/fixed")]
_THINGS = _phrases("chairs|lamps|baskets|boxes|tables|kites|clocks|boats|bicycles|paintings|candles|maps")
_THINGS += _phrases("drums|jars")
_FACT_ORDERS = _phrases("{s} {v} {n} {o} in {p}.|In {p}, {s} {v} {n} {o}.|{n} {o} were {v} by {s} in {p}.")
Fact = tuple[str, int, int, str, str]  # subject, verb index, number, thing, place


def _fact(rng: random.Random) -> Fact:
    verb = rng.randrange(len(_VERBS))
    return _person(rng), verb, rng.randint(2, 40), rng.choice(_THINGS), rng.choice(_LOCATIONS)


def _say(fact: Fact, wording: int) -> str:
    subject, verb, number, thing, place = fact
    order, synonym = divmod(wording, 2)
    return _FACT_ORDERS[order].format(s=subject, v=_VERBS[verb][synonym], n=number, o=thing, p=place)


def _change_slot(rng: random.Random, fact: Fact) -> Fact:
    subject, verb, number, thing, place = fact
    slot = rng.randrange(3)
    if slot == 0:  # a new first name too: "Alice Smith" vs "Alice Chen" alone could read as one person
        first = rng.choice([name for name in _FIRST_NAMES if not subject.startswith(name + " ")])
        subject = f"{first} {rng.choice(_LAST_NAMES)}"
    elif slot == 1:
        thing = rng.choice([other for other in _THINGS if other != thing])
    else:
        number = rng.choice([other for other in range(2, 41) if other != number])
    return subject, verb, number, thing, place


def _paraphrase_row(rng: random.Random, index: int) -> Row:
    """A paraphrase always reorders the fact; a "different" pair keeps the wording and changes one slot.

    Matching slot values across the two sentences is more than a 2-layer model learns from 1500 pairs in a
    minute (measured: chance level), so the wording carries the label too and the set stays learnable.
    """
    label = ("paraphrase", "different")[index % 2]
    fact = _fact(rng)
    first = rng.randrange(2 * len(_FACT_ORDERS))
    if label == "different":
        changed = _change_slot(rng, fact)
        return {"sentence1": _say(fact, first), "sentence2": _say(changed, first), "label": label}
    order = rng.choice([other for other in range(len(_FACT_ORDERS)) if other != first // 2])
    second = 2 * order + rng.randrange(2)  # either verb synonym
    return {"sentence1": _say(fact, first), "sentence2": _say(fact, second), "label": label}


# --- nli: topic and sentiment hypotheses make zero-shot ("This example is {}.") meaningful -----------
_TOPICS = {  # subjects, predicates
    "sports": (
        _phrases("The striker|The coach|The home team|The goalkeeper|The young athlete"),
        _phrases("scored twice in the final|won the championship match|trained hard before the tournament")
        + _phrases("broke the league record|lost the semifinal on penalties"),
    ),
    "politics": (
        _phrases("The senator|The prime minister|The city council|The opposition party|The new mayor"),
        _phrases("passed a new tax law|won the election by a wide margin|debated the national budget")
        + _phrases("announced a campaign for reform|signed a treaty with its neighbours"),
    ),
    "science": (
        _phrases("The research team|The chemist|A young astronomer|The biology lab|The physicist"),
        _phrases("found a new species of beetle|measured the distance to a star|published a study on cells")
        + _phrases("tested a new vaccine in the laboratory|observed a rare particle collision"),
    ),
    "food": (
        _phrases("The chef|The bakery|A street vendor|The family kitchen|The new cafe"),
        _phrases("baked fresh bread with rosemary|cooked a spicy vegetable curry|served a creamy tomato soup")
        + _phrases("prepared a chocolate cake for dessert|grilled fish with lemon and garlic"),
    ),
    "music": (
        _phrases("The orchestra|The guitarist|A local band|The famous singer|The jazz pianist"),
        _phrases("played a symphony by candlelight|recorded a new album of love songs|performed in the park")
        + _phrases("wrote a melody for the violin|toured with a rock band"),
    ),
    "technology": (
        _phrases("The software company|The engineers|A startup|The phone maker|The computer scientist"),
        _phrases("released a faster laptop|launched a new smartphone app|built a robot that sorts packages")
        + _phrases("trained a neural network on images|fixed a security bug in the browser"),
    ),
}
_TIMES = _phrases("yesterday|last week|on Sunday|this morning|last year|in the spring")
_TOPIC_HYPOTHESES = _phrases("This example is about {}.|This text is about {}.|This example is {}.")
_POLARITY_HYPOTHESES = _phrases("This text is {}.|This example is {}.|The review is {}.")
_UNRELATED_HYPOTHESES = _phrases("This example was written by {p}.|The author of this text lives in {l}.")
_UNRELATED_HYPOTHESES += _phrases("This text was published in {y}.")
_FACT_HYPOTHESES = {
    "entailment": "{s} {v} some {t}.|{s} {v} {t} in {p}.",
    "neutral": "{s} {v} the {t} for a friend.|{s} {v} the {t} in the rain.",
    "contradiction": "{s} {v} no {t} at all.|Nobody {v} any {t} in {p}.",
}


def _nli_row(rng: random.Random, index: int) -> Row:
    label = ("entailment", "neutral", "contradiction")[index % 3]
    family = rng.choice(("topic", "topic", "sentiment", "fact"))
    if family == "fact":
        fact = _fact(rng)
        subject, verb, _, thing, place = fact
        premise, said = _say(fact, rng.randrange(6)), _VERBS[verb][0]
        if label == "entailment" and rng.random() < 0.5:
            return {"premise": premise, "hypothesis": _say(fact, rng.randrange(6)), "label": label}
        hypothesis = rng.choice(_phrases(_FACT_HYPOTHESES[label])).format(s=subject, v=said, t=thing, p=place)
        return {"premise": premise, "hypothesis": hypothesis, "label": label}
    if family == "topic":
        topic = rng.choice(sorted(_TOPICS))
        subjects, predicates = _TOPICS[topic]
        premise = f"{rng.choice(subjects)} {rng.choice(predicates)} {rng.choice(_TIMES)}."
        other = rng.choice([name for name in sorted(_TOPICS) if name != topic])
        wording = rng.choice(_TOPIC_HYPOTHESES)
    else:
        topic = rng.choice(("positive", "negative"))
        premise = _sentiment_text(rng, topic)
        other = "negative" if topic == "positive" else "positive"
        wording = rng.choice(_POLARITY_HYPOTHESES)
    if label == "neutral":
        unrelated = rng.choice(_UNRELATED_HYPOTHESES)
        hypothesis = unrelated.format(p=_person(rng), l=rng.choice(_LOCATIONS), y=rng.randint(1990, 2024))
    else:
        hypothesis = wording.format(topic if label == "entailment" else other)
    return {"premise": premise, "hypothesis": hypothesis, "label": label}


# --- ner: IOB2 tags over space-split tokens; multi-token names exercise I- tags -------------------------
_NER_TEMPLATES = _phrases(
    "{PER} works for {ORG} in {LOC} .|{PER} visited {LOC} last week .|{ORG} opened a new office in {LOC} ."
    "|{PER} and {PER} met at the {ORG} headquarters .|{PER} moved from {LOC} to {LOC} to join {ORG} ."
    "|The mayor of {LOC} thanked {PER} for the donation .|{ORG} hired {PER} as a consultant ."
    "|According to {PER} , {ORG} will expand to {LOC} next year ."
    "|Shares of {ORG} rose after {PER} spoke in {LOC} .|{PER} flew to {LOC} on {DAY} ."
    "|The weather in {LOC} was mild on {DAY} .|Nobody answered the phone at the office on {DAY} ."
)


def _ner_row(rng: random.Random, index: int) -> Row:
    tokens: list[str] = []
    tags: list[str] = []
    for word in rng.choice(_NER_TEMPLATES).split():
        kind = word[1:-1] if word.startswith("{") else ""
        if kind in ("", "DAY"):
            tokens.append(rng.choice(_DAYS) if kind else word)
            tags.append("O")
            continue
        if kind == "PER":
            name = _person(rng) if rng.random() < 0.7 else rng.choice(_FIRST_NAMES)
        else:
            name = rng.choice(_ORGS if kind == "ORG" else _LOCATIONS)
        parts = name.split()
        tokens += parts
        tags += [f"B-{kind}"] + [f"I-{kind}"] * (len(parts) - 1)
    return {"tokens": tokens, "ner_tags": tags}


# --- qa: SQuAD rows about coined towns; a quarter get distractor towns so 64 tokens must overflow -----
_FAMOUS_FOR = _phrases("its glass lanterns|a yearly kite festival|blue cheese|its stone bridges")
_FAMOUS_FOR += _phrases("a clock tower with seven bells|wooden toys|its salt marshes|honey cakes")
_INDUSTRIES = _phrases("fishing|wool weaving|copper mining|tea farming|shipbuilding|watchmaking")
_QA_VALUES: dict[str, Callable[[random.Random], str]] = {
    "year": lambda r: str(r.randint(1150, 1980)),
    "person": _person,
    "people": lambda r: f"{r.randint(2, 900)},{r.randint(0, 999):03d}",
    "coined": lambda r: _cap(_coin(r)),
    "famous": lambda r: r.choice(_FAMOUS_FOR),
    "industry": lambda r: r.choice(_INDUSTRIES),
    "distance": lambda r: str(r.randint(5, 400)),
}
_QA_FACTS = [  # kind of value, "sentence|question|question..."
    ("year", "{e} was founded in {v}.|When was {e} founded?|In what year was {e} founded?"),
    ("person", "{e} was established by {v}.|Who established {e}?|Who founded {e}?"),
    ("people", "About {v} people live in {e}.|How many people live in {e}?|What is the population of {e}?"),
    ("coined", "The {v} River flows through {e}.|Which river flows through {e}?"),
    ("famous", "{e} is famous for {v}.|What is {e} famous for?|What is {e} known for?"),
    ("person", "The current mayor of {e} is {v}.|Who is the mayor of {e}?"),
    (
        "coined",
        "{e} belongs to the kingdom of {v}.|In which kingdom is {e}?|Which kingdom does {e} belong to?",
    ),
    ("industry", "Most people in {e} work in {v}.|What industry employs most people in {e}?"),
    ("distance", "{e} lies {v} kilometres north of the capital.|How far north of the capital is {e}?"),
]


def _qa_sentence(rng: random.Random, town: str, fact: int) -> tuple[str, str, int]:
    """One sentence about ``town``, its answer and where the answer starts in the sentence."""
    kind, sentence_and_questions = _QA_FACTS[fact]
    before, after = _phrases(sentence_and_questions)[0].split("{v}")
    prefix, value = before.format(e=town), _QA_VALUES[kind](rng)
    return prefix + value + after.format(e=town), value, len(prefix)


def _qa_row(rng: random.Random, index: int) -> Row:
    town = _cap(_coin(rng, 3))
    facts = rng.sample(range(len(_QA_FACTS)), rng.randint(2, 5))
    block = [_qa_sentence(rng, town, fact) for fact in facts]
    target = rng.randrange(len(block))
    before: list[str] = []
    after: list[str] = []
    if rng.random() < 0.25:
        while sum(len(s.split()) for s in before + after) < 150:
            other = _cap(_coin(rng, 3))
            if other != town:
                extra = [_qa_sentence(rng, other, fact)[0] for fact in rng.sample(range(len(_QA_FACTS)), 4)]
                (before if rng.random() < 0.5 else after).extend(extra)
    sentences = before + [sentence for sentence, _, _ in block] + after
    _, answer, offset = block[target]
    start = sum(len(sentence) + 1 for sentence in sentences[: len(before) + target]) + offset
    context = " ".join(sentences)
    assert context[start : start + len(answer)] == answer, (context, answer, start)
    question = rng.choice(_phrases(_QA_FACTS[facts[target]][1])[1:]).format(e=town)
    answers = {"text": [answer], "answer_start": [start]}
    return {"id": "", "title": town, "question": question, "context": context, "answers": answers}


# --- summarization: the summary is the lead sentence minus its "on <day>", so it is copy-like -------
_EVENTS = [  # lead|five details
    "{O} opened a new {f} in {L}|The {f} will employ about {n} people.|Local officials welcomed the news."
    "|{P}, a spokesperson for {O}, said the project took {m} years to plan.|Construction began in {y}."
    "|The company already runs {k} other sites in the region.",
    "{O} agreed to buy {O2} for {n} million dollars|The deal is expected to close next year."
    "|{P}, the chief executive of {O}, called it a perfect match.|{O2} was founded in {y} in {L}."
    "|Shares of {O2} rose by {k} percent.|Regulators in {L} must still approve the deal.",
    "The city of {L} held its annual {x} festival|More than {n} visitors attended."
    "|{P} opened the event with a short speech.|Street vendors sold food and drinks until midnight."
    "|The first {x} festival took place in {y}.|Organisers plan to make it bigger next year.",
    "{T} beat {T2} {a} to {b} in {L}|{P} scored the winning goal.|About {n} fans watched the game."
    "|It was the first win for {T} in {m} weeks.|The coach praised the defence after the game."
    "|The two teams meet again next month.",
    "Scientists at {O} discovered a new {t} near {L}|The team was led by {P}."
    "|The finding was published in a science journal.|Researchers spent {m} years searching the area."
    "|{P} said more study is needed.|The site will be closed to visitors for now.",
    "{P} was elected mayor of {L}|{P} won {k} percent of the vote.|Turnout was higher than in {y}."
    "|The new mayor promised to build more parks.|{P} previously worked at {O}."
    "|Celebrations went on late into the night.",
]
_MASCOTS = _phrases("Lions|Falcons|Sharks|Wolves|Comets|Pirates")
_FACILITIES = _phrases("factory|office|warehouse|research centre|store")
_FESTIVALS = _phrases("lantern|kite|music|harvest|film")
_DISCOVERIES = _phrases("species of frog|type of crystal|comet|underground lake")


def _summarization_row(rng: random.Random, index: int) -> Row:
    lead, *details = _phrases(rng.choice(_EVENTS))
    org, org2 = rng.sample(_ORGS, 2)
    city, city2 = rng.sample(_LOCATIONS, 2)
    mascot, mascot2 = rng.sample(_MASCOTS, 2)
    score = rng.randint(1, 6)
    slots = dict(O=org, O2=org2, L=rng.choice(_LOCATIONS), P=_person(rng), n=rng.randint(100, 5000))
    slots.update(m=rng.randint(2, 9), y=rng.randint(1950, 2020), k=rng.randint(2, 30))
    slots.update(f=rng.choice(_FACILITIES))
    slots.update(T=f"the {city} {mascot}", T2=f"the {city2} {mascot2}", a=score, b=rng.randint(0, score - 1))
    slots.update(x=rng.choice(_FESTIVALS), t=rng.choice(_DISCOVERIES))
    core = _cap(lead.format(**slots))
    body = [detail.format(**slots) for detail in rng.sample(details, rng.randint(2, 5))]
    return {"document": " ".join([f"{core} on {rng.choice(_DAYS)}.", *body]), "summary": f"{core}."}


# --- translation: word-for-word into a coined language, adjectives moved after their noun -------------
_EN_NOUNS = _phrases("cat|dog|bird|fish|horse|child|farmer|teacher|king|queen|baker|river|house|tree|boat")
_EN_NOUNS += _phrases("apple|bread|book|garden|stone")
_EN_ADJECTIVES = _phrases("big|small|red|blue|old|young|happy|quiet|fast|green|brave")
_EN_VERBS = _phrases("saw|found|liked|carried|painted|followed|watched|heard|washed|ate|built|visited|pushed")
_EN_VERBS += _phrases("chased")
_EN_OTHER = _phrases("the|a|in|near|with|today|yesterday|again")


def _coin_lexicon(rng: random.Random) -> dict[str, str]:
    lexicon: dict[str, str] = {}
    for word in _EN_NOUNS + _EN_ADJECTIVES + _EN_VERBS + _EN_OTHER:
        while (coined := _coin(rng, 1 if word in _EN_OTHER else 2)) in lexicon.values():
            pass
        lexicon[word] = coined
    return lexicon


# A fixed seed of its own: the language stays the same whatever --seed the sets are drawn with.
_LEXICON = _coin_lexicon(random.Random("rayformers-lexicon"))


def _noun_phrase(rng: random.Random) -> list[str]:
    adjective = [rng.choice(_EN_ADJECTIVES)] if rng.random() < 0.5 else []
    return [rng.choice(("the", "a")), *adjective, rng.choice(_EN_NOUNS)]


def _translation_row(rng: random.Random, index: int) -> Row:
    words = [*_noun_phrase(rng), rng.choice(_EN_VERBS), *_noun_phrase(rng)]
    if rng.random() < 0.4:
        words += [rng.choice(("in", "near", "with")), *_noun_phrase(rng)]
    if rng.random() < 0.3:
        words.append(rng.choice(("today", "yesterday", "again")))
    target = list(words)
    for i in range(len(target) - 1):
        if target[i] in _EN_ADJECTIVES and target[i + 1] in _EN_NOUNS:
            target[i], target[i + 1] = target[i + 1], target[i]
    return {"source": " ".join(words) + ".", "target": " ".join(_LEXICON[w] for w in target) + "."}


# --- corpus: single sentences drawn from every other set, for tokenizers and language models ---------
_CORPUS_SOURCES: list[tuple[RowMaker, tuple[str, ...]]] = [
    (_sentiment_row, ("text",)),
    (_paraphrase_row, ("sentence1", "sentence2")),
    (_nli_row, ("premise", "hypothesis")),
    (_ner_row, ("tokens",)),
    (_qa_row, ("context", "question")),
    (_summarization_row, ("document",)),
    (_translation_row, ("source", "target")),
]


def _corpus_row(rng: random.Random, index: int) -> Row:
    make, fields = _CORPUS_SOURCES[index % len(_CORPUS_SOURCES)]
    row = make(rng, rng.randrange(6))
    texts = [" ".join(v) if isinstance(v, list) else str(v) for v in (row[field] for field in fields)]
    return {"text": rng.choice(re.split(r"(?<=[.!?]) ", rng.choice(texts)))}


# --- ranking: questions about coined towns, each with 8 candidate sentences to rank ---------------------
# Answers are worded unlike their questions ("When was X founded?" / "X dates back to 1432."), while the
# distractors repeat the question's words ("Y was founded in 1200.") or its town ("X is famous for ..."):
# ranking by word overlap puts those first; a model that learns which wording answers which question, and
# then matches the town, does not.
_ANSWER_WORDINGS = [  # per _QA_FACTS entry: the fact said without its question's words
    "{e} dates back to {v}.|The first houses of {e} rose in {v}.",
    "{v} laid the first stone of {e}.|{e} owes its beginning to {v}.",
    "{e} is home to {v} residents.|Some {v} residents call {e} home.",
    "{e} sits on the banks of the {v}.|Boats on the {v} pass the quays of {e}.",
    "{e} draws travellers with {v}.|Travellers remember {e} by {v}.",
    "{v} leads the town hall of {e}.|{e} elected {v} to run the town hall.",
    "{e} pays its taxes under the crown of {v}.|The crown of {v} rules over {e}.",
    "{e} lives from {v}.|The families of {e} earn their living from {v}.",
    "Travel {v} kilometres from the seat of government to reach {e}.|A journey of {v} kilometres leads to {e}.",
]
RANKING_QUERIES = (250, 30)
"""Queries in the ranking set's train and validation splits; each brings 8 candidate documents."""
# A fixed map of towns, as a search index covers the same places again and again.
_RANKING_TOWNS = sorted({_cap(_coin(random.Random(f"ranking-town-{i}"), 3)) for i in range(40)})


def _answer(rng: random.Random, town: str, fact: int) -> str:
    kind = _QA_FACTS[fact][0]
    return rng.choice(_phrases(_ANSWER_WORDINGS[fact])).format(e=town, v=_QA_VALUES[kind](rng))


def _ranking_query(rng: random.Random) -> list[Row]:
    """One question and its candidates: the answer (label 2); the asked fact about another town, worded
    as answers are (1); the asked fact about three other towns in the question's own words (0); and three
    other facts about the question's town (0)."""
    town, *others = rng.sample(_RANKING_TOWNS, 5)
    fact, *rest = rng.sample(range(len(_QA_FACTS)), 4)
    query = rng.choice(_phrases(_QA_FACTS[fact][1])[1:]).format(e=town)
    candidates = [(_answer(rng, town, fact), 2), (_answer(rng, others[0], fact), 1)]
    candidates += [(_qa_sentence(rng, other, fact)[0], 0) for other in others[1:]]
    candidates += [(_qa_sentence(rng, town, other)[0], 0) for other in rest]
    rng.shuffle(candidates)
    return [{"query": query, "document": d, "label": g, "relevant": int(g == 2)} for d, g in candidates]


def _write_ranking(out: Path, seed: int) -> None:
    """`ranking/`: query, document, label (graded 0-2), relevant (binary), 8 documents per query."""
    rng = random.Random(f"{seed}-ranking")
    folder = out / "ranking"
    folder.mkdir(parents=True, exist_ok=True)
    seen: set[str] = set()  # answers: validation never asks what training answered
    for split, count in zip(("train", "validation"), RANKING_QUERIES, strict=True):
        rows: list[Row] = []
        while len(rows) < 8 * count:
            group = _ranking_query(rng)
            answer = str(next(r["document"] for r in group if r["label"] == 2))
            if answer not in seen:
                seen.add(answer)
                rows.extend(group)
        _write_split(folder, split, rows)


# --- writing -------------------------------------------------------------------------------------------
_SETS: dict[str, tuple[RowMaker, int, int, str]] = {  # maker, train rows, validation rows, schema
    "sentiment": (_sentiment_row, 2000, 200, "text, label (positive, negative); also `.csv`"),
    "paraphrase": (_paraphrase_row, 1500, 150, "sentence1, sentence2, label (paraphrase, different)"),
    "nli": (_nli_row, 1500, 150, "premise, hypothesis, label (entailment, neutral, contradiction)"),
    "ner": (_ner_row, 1200, 120, "tokens, ner_tags (IOB2 over PER, ORG, LOC)"),
    "qa": (_qa_row, 1000, 100, "SQuAD: id, title, question, context, answers {text, answer_start}"),
    "summarization": (_summarization_row, 1000, 100, "document, summary"),
    "translation": (_translation_row, 1500, 150, "source, target"),
    "corpus": (_corpus_row, 3000, 300, "text; also `.txt`, one sentence per line"),
}


def _draw(rng: random.Random, make: RowMaker, count: int) -> list[Row]:
    """``count`` distinct rows; the index passed to ``make`` counts kept rows so labels stay balanced."""
    rows: list[Row] = []
    seen: set[str] = set()
    for _ in range(100 * count):
        row = make(rng, len(rows))
        key = json.dumps(row, ensure_ascii=False, sort_keys=True)
        if key not in seen:
            seen.add(key)
            rows.append(row)
            if len(rows) == count:
                return rows
    raise RuntimeError(f"{make.__name__} gave only {len(rows)} distinct rows of {count}; widen its lexicon")


def _write(path: Path, text: str) -> None:
    path.write_text(text, encoding="utf-8", newline="\n")


def _write_split(folder: Path, split: str, rows: list[Row]) -> None:
    _write(folder / f"{split}.jsonl", "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
    if folder.name == "sentiment":  # so that CSV readers have a sample too
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["text", "label"])
        writer.writerows([row["text"], row["label"]] for row in rows)
        _write(folder / f"{split}.csv", buffer.getvalue())
    if folder.name == "corpus":
        _write(folder / f"{split}.txt", "".join(f"{row['text']}\n" for row in rows))


def _readme(seed: int) -> str:
    lines = [
        "# Sample datasets",
        "",
        f"Generated by `python -m rayformers.data.sample_sets` (seed {seed}). Do not hand-edit: change",
        "`data/sample_sets.py` and rerun it; a unit test fails when these files differ from a fresh",
        "generation. Every set has `train.jsonl` and `validation.jsonl` (one JSON object per line);",
        "validation rows never repeat train rows.",
        "",
        "| set | schema | train | validation |",
        "| --- | --- | ---: | ---: |",
    ]
    lines += [
        f"| `{name}/` | {schema} | {train} | {val} |" for name, (_, train, val, schema) in _SETS.items()
    ]
    lines += [
        "",
        "Labels are signalled by the words (no label noise) and balanced, so that tiny models trained",
        "from scratch on CPU learn them. In `paraphrase/` a paraphrase always reorders the",
        "sentence (and may swap the verb for a synonym) while a `different` pair keeps the wording and",
        "changes the subject, object or number. In `qa/` a quarter of the contexts carry sentences about",
        "other towns (150+ words), so a max length of 64 tokens forces overflow windows. `translation/`",
        "maps English word-for-word into a coined language and moves adjectives after their noun.",
        "`corpus/` mixes sentences from all other sets, for tokenizer training, fill-mask and causal LM.",
        "",
        "Derived from the sets above:",
        "",
        "- `pairs/`: anchor, positive: the paraphrase set's positive pairs, for embedding training.",
        f"- `ranking/`: query, document, label (0-2), relevant (0/1): {RANKING_QUERIES[0]} and "
        f"{RANKING_QUERIES[1]} questions about",
        "  coined towns (qa/'s facts), 8 documents each, for reranking: the answer (2), the asked fact about",
        "  another town (1), the asked fact about other towns in the question's words (0), other facts about",
        "  the town (0). Answers never use their question's words, so ranking by word overlap fails.",
        "- `tokenizers/wordpiece` and `tokenizers/bpe`: 4000-token tokenizers trained on every set's",
        "  training texts (`data.tokenizer_training`), which the shipped configs and the quickstart use.",
        "",
    ]
    return "\n".join(lines)


def generate(out_dir: str | Path = DEFAULT_OUT, seed: int = DEFAULT_SEED) -> dict[str, tuple[int, int]]:
    """Write every sample set under ``out_dir`` and return ``{set: (train rows, validation rows)}``."""
    out = Path(out_dir)
    counts: dict[str, tuple[int, int]] = {}
    for name, (make, n_train, n_validation, _) in _SETS.items():
        rng = random.Random(
            f"{seed}-{name}"
        )  # one stream per set: editing one set leaves the others as they are
        rows = _draw(rng, make, n_train + n_validation)
        folder = out / name
        folder.mkdir(parents=True, exist_ok=True)
        for split, part in (("train", rows[:n_train]), ("validation", rows[n_train:])):
            rng.shuffle(part)
            for number, row in enumerate(part):
                if "id" in row:
                    row["id"] = f"{name}-{split}-{number:05d}"
            _write_split(folder, split, part)
        counts[name] = (n_train, n_validation)
    _write_pairs(out)
    _write_tokenizers(out)
    _write_ranking(out, seed)  # after the tokenizers, which need not learn it: its words are qa/'s
    _write(out / "README.md", _readme(seed))
    return counts


def _read_jsonl(path: Path) -> list[Row]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def _write_pairs(out: Path) -> None:
    """`pairs/`: the paraphrase set's positive pairs, for contrastive embedding training."""
    folder = out / "pairs"
    folder.mkdir(parents=True, exist_ok=True)
    for split in ("train", "validation"):
        rows = [
            {"anchor": r["sentence1"], "positive": r["sentence2"]}
            for r in _read_jsonl(out / "paraphrase" / f"{split}.jsonl")
            if r["label"] == "paraphrase"
        ]
        _write_split(folder, split, rows)


def _write_tokenizers(out: Path) -> None:
    """`tokenizers/{wordpiece,bpe}`: small tokenizers trained on every set's training texts, so the
    shipped configs and the quickstart build tiny models without a download."""
    from rayformers.data.tokenizer_training import train_tokenizer

    texts: list[str] = []
    for name in sorted([*_SETS, "pairs"]):  # the sets only: not what a regeneration finds on disk
        for row in _read_jsonl(out / name / "train.jsonl"):
            for value in row.values():
                if isinstance(value, str):
                    texts.append(value)
                elif isinstance(value, list) and value and isinstance(value[0], str):
                    texts.append(" ".join(value))
    for kind in ("wordpiece", "bpe"):
        train_tokenizer(texts, out / "tokenizers" / kind, kind=kind, vocab_size=4000, model_max_length=512)


def main(argv: list[str] | None = None) -> int:
    """Command line entry point: ``python -m rayformers.data.sample_sets [--out DIR] [--seed N]``."""
    parser = argparse.ArgumentParser(description="Write the small, learnable sample datasets.")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="random seed (default: %(default)s)")
    args = parser.parse_args(argv)
    for name, (train, validation) in generate(args.out, args.seed).items():
        print(f"{name:14} train={train:5} validation={validation:4}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
