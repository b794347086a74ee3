"""The seeded synthetic default dataset: power-law popularity and activity with latent item communities."""

from __future__ import annotations

import logging
from typing import Any, cast

import numpy as np

from ..config import DataConfig
from ..errors import HqgnnError
from .dataset import InteractionData
from .split import drop_items_without_train, split_random

log = logging.getLogger("hqgnn.data")

# Where a user's interactions come from: its main community, a second one, or anywhere (by popularity).
_P_PRIMARY, _P_SECONDARY = 0.7, 0.2
_ITEM_POP_SIGMA = 1.3  # lognormal popularity: the top 10% of items hold roughly half of the mass
_USER_ACT_SIGMA = 0.8  # lognormal activity, heavy-tailed like real logs


def make_synthetic(
    n_users: int = 3000,
    n_items: int = 2000,
    n_communities: int = 20,
    mean_activity: float = 30.0,
    seed: int = 2020,
) -> np.ndarray:
    """Generate unique ``(user, item)`` pairs, shape ``(n, 2)`` int64, sorted by user then item.

    Model: items belong to one of ``n_communities`` latent communities (Dirichlet-sized) and have
    lognormal (heavy-tailed) popularity; each user has lognormal activity around ``mean_activity``
    (at least 2), a primary and a secondary community, and draws 70% of its items from the primary,
    20% from the secondary and 10% from the whole catalogue, always proportionally to popularity.
    So global popularity is informative but a collaborative model that finds the communities does
    clearly better. Every user gets at least 2 distinct items; some unpopular items may get none
    (callers drop them, see :func:`synthetic_dataset`). Fully vectorized, seeded, no network.
    """
    if n_users < 1 or n_items < 2 or n_communities < 1 or mean_activity < 2:
        raise HqgnnError(
            "synthetic data needs n_users >= 1, n_items >= 2, n_communities >= 1 and mean_activity >= 2, got "
            f"{n_users}, {n_items}, {n_communities}, {mean_activity}"
        )
    rng = np.random.default_rng(seed)
    n_comm = n_communities

    item_comm = rng.choice(n_comm, size=n_items, p=rng.dirichlet(np.full(n_comm, 2.0)))
    item_pop = rng.lognormal(0.0, _ITEM_POP_SIGMA, n_items)
    # Items laid out community by community, with cumulative popularity, for inverse-CDF sampling.
    layout = np.argsort(item_comm, kind="stable")
    cum = np.cumsum(item_pop[layout])
    comm_mass = np.bincount(item_comm, weights=item_pop, minlength=n_comm)
    comm_lo = np.searchsorted(item_comm[layout], np.arange(n_comm))  # first layout slot of each community
    comm_hi = np.searchsorted(item_comm[layout], np.arange(n_comm), side="right") - 1
    comm_base = np.r_[0.0, cum][comm_lo]  # popularity mass before each community

    mu = np.log(mean_activity) - _USER_ACT_SIGMA**2 / 2  # so the mean is mean_activity
    activity = np.rint(rng.lognormal(mu, _USER_ACT_SIGMA, n_users)).astype(np.int64)
    activity = np.clip(activity, 2, max(2, n_items // 4))
    p_comm = comm_mass / comm_mass.sum()
    primary = rng.choice(n_comm, size=n_users, p=p_comm)
    secondary = rng.choice(n_comm, size=n_users, p=p_comm)

    def draw(users: np.ndarray) -> np.ndarray:
        """One popularity-weighted item per entry of ``users``, from the mixture above."""
        source = rng.random(len(users))
        comm = np.where(source < _P_PRIMARY, primary[users], secondary[users])
        anywhere = source >= _P_PRIMARY + _P_SECONDARY
        u = rng.random(len(users))
        target = np.where(anywhere, u * cum[-1], comm_base[comm] + u * comm_mass[comm])
        slot = np.searchsorted(cum, target, side="right")
        # Float round-off at a community's upper edge must not spill into the next community.
        slot = np.where(anywhere, np.minimum(slot, n_items - 1), np.clip(slot, comm_lo[comm], comm_hi[comm]))
        return cast(np.ndarray, layout[slot])

    # Oversample, de-duplicate, then keep each user's first `activity` distinct items in draw order.
    n_draws = np.ceil(activity * 1.6).astype(np.int64) + 2
    users = np.repeat(np.arange(n_users), n_draws)
    items = draw(users)
    for _ in range(100):
        users, items = _first_distinct(users, items, n_items)
        have = np.bincount(users, minlength=n_users)
        short = np.flatnonzero(have < 2)
        if short.size == 0:
            break
        # Rare: a tiny community made a user draw the same items; top up from the whole catalogue.
        extra = np.repeat(short, 8)
        users = np.r_[users, extra]
        items = np.r_[items, rng.integers(0, n_items, len(extra))]
    order = np.lexsort((np.arange(len(users)), users))
    rank = np.arange(len(users)) - np.searchsorted(users[order], users[order])
    keep = order[rank < activity[users[order]]]
    pairs = np.column_stack([users[keep], items[keep]]).astype(np.int64)
    return pairs[np.lexsort((pairs[:, 1], pairs[:, 0]))]


def _first_distinct(users: np.ndarray, items: np.ndarray, n_items: int) -> tuple[np.ndarray, np.ndarray]:
    """Drop repeated (user, item) draws, keeping the first occurrence and the draw order."""
    _, first = np.unique(users * n_items + items, return_index=True)
    first = np.sort(first)
    return users[first], items[first]


def synthetic_dataset(cfg: DataConfig) -> tuple[InteractionData, dict[str, Any]]:
    """The default dataset from ``cfg.synthetic_*``, split per user at random with ``cfg.test_ratio`` / ``cfg.seed``.

    Items that end up with no train interaction (never drawn, or drawn only into test) are
    dropped and the rest re-indexed, so every item occurs in train; ``item_ids`` keeps each item's
    index in the generator, so ``n_items`` can be slightly below ``cfg.synthetic_items``.
    Validation is carved later by :func:`hqgnn.data.load_dataset`.
    """
    pairs = make_synthetic(
        cfg.synthetic_users, cfg.synthetic_items, cfg.synthetic_communities, cfg.synthetic_mean_activity, cfg.seed
    )
    train, test = split_random(pairs, cfg.test_ratio, cfg.seed)
    item_ids = np.arange(cfg.synthetic_items, dtype=np.int64)
    train, test, item_ids, n_test_dropped, n_items_dropped = drop_items_without_train(train, test, item_ids)
    if n_items_dropped:
        log.info(
            "synthetic: %d items without train interactions dropped (%d test pairs)", n_items_dropped, n_test_dropped
        )
    data = InteractionData(
        name="synthetic",
        n_users=cfg.synthetic_users,
        n_items=len(item_ids),
        train=train,
        val=np.empty((0, 2), dtype=np.int64),
        test=test,
        user_ids=np.arange(cfg.synthetic_users, dtype=np.int64),
        item_ids=item_ids,
    )
    return data, {"test_dropped_cold_items": n_test_dropped, "items_dropped": n_items_dropped}
