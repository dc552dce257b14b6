"""The embedded default dataset: a seeded synthetic world with hidden topics.

Items belong to one hidden topic; their titles and descriptions are drawn from that topic's
English vocabulary, so a text encoder can recover the topics. Users have sparse topic mixtures
(Dirichlet) and, inside each topic, a preferred sub-topic (a finer taste that popularity cannot
explain but a collaborative model can learn), a power-law activity level (a long tail of sparse users) and increasing timestamps;
item popularity is Zipf-like, and a fraction of items is released only near the end of the
timeline (cold items). Ratings are higher for items of a user's favourite topics.

Generation is chunked by users and seeded per chunk, so the same seed gives the same events
however many tasks generate them. The world is exposed as a :class:`~bridgerec.data.sources.base.Source`.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Iterator, Optional

import numpy as np
import pandas as pd

from bridgerec.data.config import SyntheticConfig

__all__ = ["PRESETS", "TOPICS", "SyntheticWorld", "SyntheticSource"]

# name -> (users, items, topics, mean events per user)
PRESETS: dict[str, tuple[int, int, int, int]] = {
    "tiny": (300, 200, 6, 14),
    "small": (3_000, 1_500, 10, 20),
    "medium": (20_000, 8_000, 14, 20),
    "large": (50_000, 20_000, 16, 24),
    "xlarge": (420_000, 100_000, 16, 26),
}

TOPICS: dict[str, list[str]] = {
    "space": "galaxy rocket astronaut planet orbit comet nebula telescope moon starship cosmos satellite asteroid launch gravity".split(),
    "cooking": "recipe kitchen chef bread pasta spice soup oven dessert garlic baking flavor dinner sauce noodles".split(),
    "football": "goal stadium striker league match coach trophy penalty defender season tournament referee dribble kickoff fans".split(),
    "romance": "love heart wedding kiss romance passion letter affair couple bride sweetheart longing embrace proposal date".split(),
    "history": "empire war king medieval ancient dynasty castle revolution battle pharaoh knight treaty archive monarch chronicle".split(),
    "gardening": "garden flower seed soil rose tulip compost greenhouse orchard harvest blossom pruning herb vegetable lawn".split(),
    "music": "guitar piano melody concert band rhythm song drum orchestra jazz album singer chorus violin symphony".split(),
    "finance": "money stock investment bank market budget savings dividend portfolio interest loan economy trading wealth tax".split(),
    "travel": "journey passport island beach hotel adventure map flight backpack mountain cruise tourist luggage resort voyage".split(),
    "horror": "ghost haunted monster zombie vampire nightmare curse scream shadow demon graveyard terror witch blood fear".split(),
    "fitness": "workout yoga running muscle gym strength cardio stretch marathon training protein endurance squat pilates sweat".split(),
    "technology": "computer software robot algorithm laptop network code internet chip data startup gadget processor cloud app".split(),
    "pets": "dog cat puppy kitten leash aquarium parrot hamster veterinarian collar fetch grooming paw bark treats".split(),
    "mystery": "detective clue murder suspect alibi inspector crime secret evidence riddle witness case puzzle spy heist".split(),
    "ocean": "whale shark coral reef dolphin tide sailor ship lighthouse submarine wave fishing harbor anchor seashell".split(),
    "art": "painting canvas sculpture gallery portrait museum brush watercolor sketch artist mural exhibit palette easel color".split(),
}

_TITLE_FORMS = ("The {A} {B}", "{A} and the {B}", "{A} {B} Stories", "A {A} of {B}", "{A}: {B} Edition", "Beyond the {B}")
_TEXT_FORMS = (
    "A story about the {a} and the {b}.",
    "Everything about {a}, {b} and {c}.",
    "Fans of {a} will enjoy the {b} in this one.",
    "An honest guide to {a} with notes on {b}.",
    "It mixes {a}, {b} and a little {c}.",
)
_EPOCH = 1_704_067_200  # 2024-01-01 UTC
_SPAN = 365 * 86_400
_USERS_PER_CHUNK = 2_000
_SUBTOPICS = 4  # sub-topics per topic; item titles use the sub-topic's share of the vocabulary
_SUBTOPIC_LOYALTY = 0.75  # probability an event falls in the user's preferred sub-topic of its topic
_NOISE = 0.1  # probability an event's topic is uniform instead of from the user's mixture


@dataclass(frozen=True)
class _Sizes:
    n_users: int
    n_items: int
    n_topics: int
    mean_events: int


class SyntheticWorld:
    """Items, topic structure and per-chunk user generation for one seed and size."""

    def __init__(self, cfg: SyntheticConfig, seed: int):
        users, items, topics, mean = PRESETS[cfg.preset]
        n_topics = cfg.n_topics or topics
        if not 2 <= n_topics <= len(TOPICS):
            raise ValueError(f"data.source.synthetic.n_topics must be in [2, {len(TOPICS)}], got {n_topics}")
        self.sizes = _Sizes(cfg.n_users or users, cfg.n_items or items, n_topics, mean)
        if self.sizes.n_items < 2 * _SUBTOPICS * n_topics:
            raise ValueError(f"data.source.synthetic.n_items must be at least {2 * _SUBTOPICS} x the number of topics")
        self.cfg = cfg
        self.seed = seed
        self.topic_names = list(TOPICS)[:n_topics]

    # -- items ---------------------------------------------------------------------------
    @cached_property
    def _item_arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(topic (I,), sub-topic (I,), popularity weight (I,), release time (I,))."""
        rng = np.random.default_rng([self.seed, 1_000_003])
        n, k = self.sizes.n_items, self.sizes.n_topics
        cells = k * _SUBTOPICS
        cell = np.concatenate([np.arange(min(cells, n)), rng.integers(0, cells, max(n - cells, 0))])
        topic, sub = cell // _SUBTOPICS, cell % _SUBTOPICS  # every (topic, sub-topic) has items
        weight = (rng.permutation(n) + 1.0) ** -0.8  # Zipf-like popularity
        release = rng.uniform(0, 0.6 * _SPAN, n)
        cold = rng.random(n) < self.cfg.cold_item_fraction
        release[cold] = rng.uniform(0.9 * _SPAN, 0.98 * _SPAN, cold.sum())
        return topic, sub, weight, release

    def items(self) -> pd.DataFrame:
        """Item table: item_id, title, text (+ the hidden topic for analysis)."""
        topic, sub = self._item_arrays[:2]
        rng = np.random.default_rng([self.seed, 2_000_003])
        rows = []
        for i, (t, st) in enumerate(zip(topic, sub)):
            words = TOPICS[self.topic_names[t]]
            own = np.arange(st, len(words), _SUBTOPICS)  # the sub-topic's share of the vocabulary
            a, b = rng.choice(own, 2, replace=False)
            c, d = rng.choice(len(words), 2, replace=False)
            title = _TITLE_FORMS[rng.integers(len(_TITLE_FORMS))].format(A=words[a].title(), B=words[b].title())
            text = " ".join(
                _TEXT_FORMS[j].format(a=words[a], b=words[c], c=words[d]) for j in rng.choice(len(_TEXT_FORMS), 2, replace=False)
            )
            rows.append((f"item_{i:06d}", f"{title} #{i}", text, self.topic_names[t]))
        return pd.DataFrame(rows, columns=["item_id", "title", "text", "topic"])

    @cached_property
    def _cell_index(self) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Per (topic * _SUBTOPICS + sub-topic) cell: item ids sorted by release, their release
        times, cumulative popularity weights."""
        topic, sub, weight, release = self._item_arrays
        cell = topic * _SUBTOPICS + sub
        out = []
        for c in range(self.sizes.n_topics * _SUBTOPICS):
            ids = np.flatnonzero(cell == c)
            ids = ids[np.argsort(release[ids], kind="stable")]
            out.append((ids, release[ids], np.cumsum(weight[ids])))
        return out

    # -- users and events ----------------------------------------------------------------
    @property
    def n_chunks(self) -> int:
        return -(-self.sizes.n_users // _USERS_PER_CHUNK)

    def chunk_users(self, chunk: int) -> range:
        return range(chunk * _USERS_PER_CHUNK, min(self.sizes.n_users, (chunk + 1) * _USERS_PER_CHUNK))

    def events(self, chunk: int) -> pd.DataFrame:
        """Events of one user chunk: user_id, item_id, ts (unix s), rating (1..5)."""
        rng = np.random.default_rng([self.seed, chunk])
        users = self.chunk_users(chunk)
        k, mean = self.sizes.n_topics, self.sizes.mean_events
        n_u = len(users)
        mix = rng.dirichlet(np.full(k, 0.15), n_u)  # (U, K) sparse topic mixtures
        # power-law activity: a long tail of sparse users and a few heavy ones
        length = np.minimum(3 + (rng.pareto(1.6, n_u) * (mean - 3) * 0.6).astype(int), 40 * mean)
        start = rng.uniform(0, 0.7 * _SPAN, n_u)
        uid = np.repeat(np.arange(n_u), length)  # (E,)
        n_e = len(uid)
        # per-user increasing times in [start_u, span]
        ts = start[uid] + rng.uniform(0, 1, n_e) * (_SPAN - start[uid])
        order = np.lexsort((ts, uid))
        uid, ts = uid[order], ts[order]
        preferred = rng.integers(0, _SUBTOPICS, (n_u, k))  # (U, K) preferred sub-topic per topic
        noise = rng.random(n_e) < _NOISE
        cum = np.cumsum(mix, axis=1)[uid]  # (E, K)
        topic = (cum < rng.random((n_e, 1))).sum(axis=1).clip(max=k - 1)
        topic[noise] = rng.integers(0, k, noise.sum())
        sub = np.where(rng.random(n_e) < _SUBTOPIC_LOYALTY, preferred[uid, topic], rng.integers(0, _SUBTOPICS, n_e))
        cell = topic * _SUBTOPICS + sub
        item = np.empty(n_e, dtype=np.int64)
        for c in np.unique(cell):
            sel = np.flatnonzero(cell == c)
            ids, rel, cw = self._cell_index[c]
            avail = np.maximum(np.searchsorted(rel, ts[sel], side="right"), 1)  # items released by then
            u = rng.random(len(sel)) * cw[avail - 1]
            item[sel] = ids[np.minimum(np.searchsorted(cw, u, side="right"), avail - 1)]
        item_topic = topic
        affinity = mix[uid, item_topic] / mix[uid].max(axis=1)
        rating = np.clip(np.rint(1.5 + 3.5 * affinity + rng.normal(0, 0.6, n_e)), 1, 5)
        df = pd.DataFrame(
            {
                "user_id": [f"user_{users[0] + u:07d}" for u in uid],
                "item_id": [f"item_{i:06d}" for i in item],
                "ts": (_EPOCH + ts).astype(np.int64),
                "rating": rating,
            }
        )
        n_dup = int(self.cfg.duplicate_fraction * n_e)
        if n_dup:
            dup = df.iloc[rng.choice(n_e, n_dup, replace=False)].copy()
            dup["ts"] += rng.integers(1, 3600, n_dup)
            df = pd.concat([df, dup], ignore_index=True)
        return df


class SyntheticSource:
    """The synthetic world behind the :class:`~bridgerec.data.sources.base.Source` contract."""

    def __init__(self, cfg: SyntheticConfig, seed: int):
        self.world = SyntheticWorld(cfg, seed)
        self.name = f"synthetic-{cfg.preset}"
        self._cfg, self._seed = cfg, seed

    @classmethod
    def from_config(cls, cfg, seed: int = 0) -> "SyntheticSource":
        return cls(cfg.synthetic, seed)

    def event_files(self) -> list[str]:
        return [f"synthetic://chunk-{c}" for c in range(self.world.n_chunks)]

    def read_events(self, path: str, chunk_rows: int) -> Iterator[pd.DataFrame]:
        chunk = int(path.rsplit("-", 1)[1])
        df = self.world.events(chunk)
        df["_file"] = path
        df["_row"] = np.arange(1, len(df) + 1)
        for start in range(0, len(df), chunk_rows):
            yield df.iloc[start : start + chunk_rows].reset_index(drop=True)

    def read_items(self) -> Optional[pd.DataFrame]:
        return self.world.items()

    def read_users(self) -> Optional[pd.DataFrame]:
        return None

    def describe(self) -> dict:
        return {"kind": "synthetic", "seed": self._seed, **self._cfg.model_dump(), **vars(self.world.sizes)}
