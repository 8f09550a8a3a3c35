"""The tick cache's dated scores (``daemon.scores``): ``LatestNews`` keeps each row's latest news
score on or before its newest bar (a score of the same day replaces it, an older one arriving
late does not, one dated after the bar waits for it), and ``latest_of`` reads a shared series
once a day."""

from __future__ import annotations

import numpy as np

from otonom_runtime.daemon.scores import NONE, Dated, LatestNews, latest_of
from otonom_schema import SentimentSeries


def _series(days: list[int], scores: list[float]) -> SentimentSeries:
    return SentimentSeries(np.array(days, dtype="datetime64[D]"), np.array(scores))


def test_latest_news_follows_each_rows_newest_bar() -> None:
    news = LatestNews()
    news.grow(3)
    assert news.day.tolist() == [NONE] * 3
    news.keep(7, 0, 10, _series([8, 9, 12], [0.1, 0.2, 0.3]))  # 12 waits for a bar on day 12
    news.keep(8, 1, 10, None)
    news.keep(9, 2, 10, _series([11], [0.9]))
    assert news.day.tolist() == [9, NONE, NONE]
    assert news.score.tolist() == [0.2, 0.0, 0.0]
    newest = np.array([11, 11, 11])
    sids, rows = np.array([7, 7, 8]), np.array([0, 0, 1])
    news.add(sids, rows, np.array([5, 11, 11]), np.array([-0.5, 0.4, 0.6]), newest[rows])
    news.settle({7: 0, 8: 1, 9: 2}, newest)
    assert news.day.tolist() == [11, 11, 11]  # the late day-5 score changes nothing
    assert news.score.tolist() == [0.4, 0.6, 0.9]  # row 2's waiting score, its bar come
    news.add(np.array([8]), np.array([1]), np.array([11]), np.array([-0.25]), np.array([11]))
    assert news.score.tolist() == [0.4, -0.25, 0.9]  # the same day replaces it
    news.settle({7: 0, 8: 1, 9: 2}, np.array([12, 12, 12]))
    assert news.day.tolist() == [12, 11, 11]  # row 0's day-12 score, waiting since its keep
    assert news.score.tolist() == [0.3, -0.25, 0.9]
    news.forget(7)
    news.keep(10, 0, 3, None)  # its row reused: no score
    assert (news.day[0], news.score[0]) == (NONE, 0.0)


def test_latest_of_reads_a_shared_series_once_a_day() -> None:
    shared, other = Dated([3, 5], [0.5, -0.5]), Dated([], [])
    dates, scores = latest_of([shared, shared, other, shared], [4, 6, 6, 2])
    assert dates.astype("datetime64[D]").astype(np.int64)[:2].tolist() == [3, 5]
    assert np.isnat(dates[2])
    assert np.isnat(dates[3])
    assert scores.tolist() == [0.5, -0.5, 0.0, 0.0]
    dates, scores = latest_of([shared] * 3, [5] * 3)  # one series, one day
    assert dates.astype(np.int64).tolist() == [5] * 3
    assert scores.tolist() == [-0.5] * 3
