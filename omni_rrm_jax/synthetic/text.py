"""Text omni tasks: small arithmetic and facts from built-in tables.

  text-sum       a + b for a, b in 0-9          wrong: off by 1 or 2
  text-product   a x b for a, b in 1-6          wrong: a slip such as (a+1) x b, a x b +- 1
                                                or a + b
  text-capital   capital of one of 12 countries wrong: another capital in the table
  text-colour    colour of an everyday object   wrong: another colour
  text-opposite  opposite of a common adjective wrong: another word in the table
  text-reading   the colour of one of two       wrong: the other thing's colour
                 things a sentence describes

Each table is small enough for a tiny model to memorise in minutes. The fact a
judgment states names the answer only ("the colour is purple", not "the plum is
purple"), as a media task's does ("the shape is red"): restating the question's
subject asks the judge to copy a word from the prompt before it recalls anything,
and a tiny judge copies the wrong subject (README: "What we tried"). text-reading
needs no memorised fact: the prompt states both colours, and the wrong answer is
the other thing's, so the words of the answer are in the prompt either way and
only reading which thing has which colour tells them apart (the text counterpart
of a media task, whose fact is in its media).
"""

from __future__ import annotations

import random

from omni_rrm_jax.synthetic.question import Question, Task, answer_pair

COLOURS = {
    "sky": "blue", "grass": "green", "snow": "white", "coal": "black", "banana": "yellow",
    "tomato": "red", "carrot": "orange", "plum": "purple", "cloud": "grey", "chocolate": "brown",
    "lemon": "yellow", "strawberry": "red", "leaf": "green", "milk": "white", "ocean": "blue",
}
CAPITALS = {
    "France": "Paris", "Italy": "Rome", "Spain": "Madrid", "Germany": "Berlin", "Japan": "Tokyo",
    "Egypt": "Cairo", "Peru": "Lima", "Kenya": "Nairobi", "Norway": "Oslo", "Greece": "Athens",
    "Canada": "Ottawa", "Cuba": "Havana",
}
_OPPOSITE_PAIRS = (("hot", "cold"), ("big", "small"), ("fast", "slow"), ("light", "dark"),
                   ("happy", "sad"), ("full", "empty"), ("wet", "dry"), ("hard", "soft"),
                   ("loud", "quiet"), ("early", "late"), ("thick", "thin"), ("rich", "poor"))
OPPOSITES = {**dict(_OPPOSITE_PAIRS), **{b: a for a, b in _OPPOSITE_PAIRS}}

# text-reading: things and colours a sentence pairs at random.
READING_THINGS = ("cup", "box", "ball", "kite", "hat", "car", "door", "book", "bag", "lamp",
                  "chair", "coat")
READING_COLOURS = ("red", "green", "blue", "yellow", "white", "black", "orange", "purple",
                   "grey", "brown")
READING_SENTENCES = ("The {x} is {a} and the {y} is {b}.", "There is {a_a} {x} and {a_b} {y}.",
                     "Tom has {a_a} {x}; Ann has {a_b} {y}.")

COLOUR_PROMPTS = ("What colour is the {x}?", "Name the colour of the {x}.",
                  "Which colour does the {x} have?", "Tell me the colour of the {x}.")
_NUMBER_ANSWERS = ("{a} {op} {b} is {v}.", "The answer is {v}.", "{V}.")


def _text(subset: str, prompt: str, answers: tuple[str, str], good: str, bad: str,
          fact: str) -> Question:
  return Question("text", subset, prompt, answers[0], answers[1], good, bad, fact)


def _other(rng: random.Random, values, *excluded):
  return rng.choice(sorted(v for v in set(values) if v not in excluded))


def text_sum(rng: random.Random) -> Question:
  a, b = rng.randint(0, 9), rng.randint(0, 9)
  wrong = a + b + rng.choice([d for d in (-2, -1, 1, 2) if a + b + d >= 0])
  prompt = rng.choice(("What is {a} plus {b}?", "Compute {a} + {b}.", "Add {a} and {b}."))
  return _text("text-sum", prompt.format(a=a, b=b),
               answer_pair(rng, _NUMBER_ANSWERS, str(a + b), str(wrong), a=a, b=b, op="plus"),
               str(a + b), str(wrong), f"{a} + {b} is {{v}}")


def text_product(rng: random.Random) -> Question:
  a, b = rng.randint(1, 6), rng.randint(1, 6)
  slips = {(a + 1) * b, a * (b + 1), a * b - 1, a * b + 1, a + b} - {a * b}
  wrong = rng.choice(sorted(s for s in slips if s >= 0))
  prompt = rng.choice(("What is {a} times {b}?", "Compute {a} x {b}.", "Multiply {a} by {b}."))
  return _text("text-product", prompt.format(a=a, b=b),
               answer_pair(rng, _NUMBER_ANSWERS, str(a * b), str(wrong), a=a, b=b, op="times"),
               str(a * b), str(wrong), f"{a} x {b} is {{v}}")


def text_capital(rng: random.Random) -> Question:
  country = rng.choice(sorted(CAPITALS))
  right = CAPITALS[country]
  wrong = _other(rng, CAPITALS.values(), right)
  prompt = rng.choice(("What is the capital of {x}?", "Name the capital of {x}."))
  answers = ("The capital of {x} is {v}.", "It is {v}.", "{V}.")
  return _text("text-capital", prompt.format(x=country),
               answer_pair(rng, answers, right, wrong, x=country), right, wrong,
               "the capital is {v}")


def text_colour(rng: random.Random) -> Question:
  thing = rng.choice(sorted(COLOURS))
  right = COLOURS[thing]
  wrong = _other(rng, COLOURS.values(), right)
  answers = ("The {x} is {v}.", "It is {v}.", "{V}.")
  return _text("text-colour", rng.choice(COLOUR_PROMPTS).format(x=thing),
               answer_pair(rng, answers, right, wrong, x=thing), right, wrong,
               "the colour is {v}")


def text_opposite(rng: random.Random) -> Question:
  word = rng.choice(sorted(OPPOSITES))
  right = OPPOSITES[word]
  wrong = _other(rng, OPPOSITES, word, right)
  prompt = rng.choice(("What is the opposite of {x}?", "Give the opposite of the word {x}."))
  answers = ("The opposite of {x} is {v}.", "It is {v}.", "{V}.")
  return _text("text-opposite", prompt.format(x=word),
               answer_pair(rng, answers, right, wrong, x=word), right, wrong,
               "the opposite is {v}")


def text_reading(rng: random.Random) -> Question:
  first, second = rng.sample(READING_THINGS, 2)
  colour = dict(zip((first, second), rng.sample(READING_COLOURS, 2)))
  thing = rng.choice((first, second))
  other = second if thing == first else first
  article = lambda word: f"{'an' if word[0] in 'aeiou' else 'a'} {word}"  # noqa: E731
  sentence = rng.choice(READING_SENTENCES).format(
      x=first, a=colour[first], a_a=article(colour[first]), y=second, b=colour[second],
      a_b=article(colour[second]))
  prompt = f"{sentence} {rng.choice(COLOUR_PROMPTS).format(x=thing)}"
  answers = ("The {x} is {v}.", "It is {v}.", "{V}.")
  return _text("text-reading", prompt,
               answer_pair(rng, answers, colour[thing], colour[other], x=thing),
               colour[thing], colour[other], "the colour is {v}")


TEXT_TASKS: dict[str, Task] = {
    "text-sum": text_sum, "text-product": text_product, "text-capital": text_capital,
    "text-colour": text_colour, "text-opposite": text_opposite,
    "text-reading": text_reading,
}
