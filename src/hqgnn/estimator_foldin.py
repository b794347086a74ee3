"""The fold-in part of the ``HQGNN`` estimator: new users / items and anonymous sessions (docs/foldin.md)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from .errors import HqgnnError

T = TypeVar("T", bound="FoldInMixin")


class FoldInMixin:
    """``fold_in_users`` / ``fold_in_items`` and ``recommend(user_items=...)`` of :class:`hqgnn.HQGNN`."""

    _run: Any
    _rec: Any
    _foldin: Any
    _test: Any
    run: Any

    if TYPE_CHECKING:  # provided by HQGNN

        def _recommender(self) -> Any: ...

        def _to_ids(self, rows: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...

    def fold_in_users(
        self: T, interactions: Any, user_col: str | None = None, item_col: str | None = None, method: str | None = None
    ) -> T:
        """Add new users from their interactions with known items, without retraining; returns self.

        ``interactions``: a DataFrame (``user_col`` / ``item_col``, default the fit's) or a
        ``(user_ids, item_ids)`` pair of arrays, in your ids. Each new user gets an embedding (and codes
        in the run's format) by :class:`hqgnn.foldin.FoldIn` (``method``: ``"lstsq"`` by default,
        ``"propagate"`` or ``"grad"``); existing users and items are unchanged. A user id the model
        already has, an unknown item or no interactions raise :class:`~hqgnn.errors.HqgnnError`.
        ``save()`` then writes the grown run.
        """
        return self._fold_in("user", interactions, user_col, item_col, method)

    def fold_in_items(
        self: T, interactions: Any, user_col: str | None = None, item_col: str | None = None, method: str | None = None
    ) -> T:
        """Add new items from their interactions with known users (as :meth:`fold_in_users`, sides swapped)."""
        return self._fold_in("item", interactions, user_col, item_col, method)

    def _fold_in(
        self: T, side: str, interactions: Any, user_col: str | None, item_col: str | None, method: str | None
    ) -> T:
        from .data.memory import interactions_from
        from .foldin import DEFAULT_METHOD
        from .foldin_run import fold_in_side

        data_cfg = self.run.config.data
        inter = interactions_from(interactions, user_col or data_cfg.user_col, item_col or data_cfg.item_col)
        nodes, others = (inter.users, inter.items) if side == "user" else (inter.items, inter.users)
        self._run = fold_in_side(self.run, side, nodes, others, method or DEFAULT_METHOD)
        self._rec = self._foldin = None
        self._test = None  # the fit's test matrix has the old shape
        return self

    def _recommend_sessions(
        self, user_items: Any, k: int, exclude_seen: bool, users: Any
    ) -> tuple[np.ndarray, np.ndarray]:
        from .foldin import FoldIn
        from .foldin_run import recommend_sessions, session_rows

        if users is not None or user_items is None:
            raise HqgnnError("recommend: pass users or user_items (anonymous sessions), exactly one")
        sessions = list(user_items)
        if sessions and np.ndim(sessions[0]) == 0:  # one flat list: one session
            sessions = [sessions]
        rec = self._recommender()
        if getattr(self, "_foldin", None) is None:
            self._foldin = FoldIn(rec.run)
        scores, items = recommend_sessions(rec, self._foldin, session_rows(rec.run, sessions), k, exclude_seen)
        return self._to_ids(np.asarray(items), np.asarray(scores))
