"""Hourly signals computed a group of whole areas at a time give the figures of the whole fleet at once."""

from __future__ import annotations

import numpy as np

from analytics.theft import data as theft_data
from analytics.theft.features import compute_features
from tests.analytics.theft.fleet import build


def test_hourly_features_in_groups_of_areas_equal_the_whole_fleet(monkeypatch):
    data, _ = build()
    assert isinstance(data.hourly, np.ndarray)
    # Two meters flat all along (a day flattened since before the data): the balance lends each its
    # area's usual shape, the same whichever group the area is worked on in.
    for serial in ("A05", "B07"):
        i = data.serials.index(serial)
        data.hourly[i] = data.hourly[i].mean(axis=1, keepdims=True)
    for area in ("A", "B"):  # hourly feeder totals: the interval balance runs area by area
        data.feeders_hourly[area] = 1.04 * np.nansum(data.hourly[data.area == area], axis=0)
    data.area[:3] = ""  # meters without an area are grouped like any others
    whole = compute_features(data)
    monkeypatch.setattr(theft_data, "HOURLY_CHUNK_METERS", 4)
    chunks = [rows for rows, _ in data.hourly_chunks()]
    assert len(chunks) > 2
    assert sorted(np.concatenate(chunks).tolist()) == list(range(data.n_meters))
    for rows in chunks:  # an area is never split
        areas = {a for a in data.area[rows] if a}
        assert all(set(np.flatnonzero(data.area == a)) <= set(rows.tolist()) for a in areas)
    heard: list[tuple[int, int]] = []
    grouped = compute_features(data, progress=lambda meters, of: heard.append((meters, of)))
    # The progress heard of every group as it was kept, in order, each time out of the whole fleet.
    assert heard == [(rows.size, data.n_meters) for rows in chunks]
    np.testing.assert_array_equal(grouped.X, whole.X)
    assert grouped.profile is not None and whole.profile is not None
    np.testing.assert_array_equal(grouped.profile.corr, whole.profile.corr)
    assert grouped.interval is not None and whole.interval is not None
    np.testing.assert_array_equal(grouped.interval.attributed, whole.interval.attributed)
    np.testing.assert_array_equal(grouped.interval.residual, whole.interval.residual)
    np.testing.assert_array_equal(grouped.recent_z, whole.recent_z)


def test_own_hourly_signals_in_blocks_of_meters_equal_one_call(monkeypatch):
    from analytics.theft import features

    data, _ = build()
    for area in ("A", "B"):
        data.feeders_hourly[area] = 1.04 * np.nansum(data.hourly[data.area == area], axis=0)
    assert len(list(data.hourly_chunks())) == 1  # one group, worked on in this process
    whole = compute_features(data)
    monkeypatch.setattr(features, "OWN_BLOCK", 3)
    blocks = compute_features(data)
    np.testing.assert_array_equal(blocks.X, whole.X)
    assert blocks.profile is not None and whole.profile is not None
    np.testing.assert_array_equal(blocks.profile.corr, whole.profile.corr)
    np.testing.assert_array_equal(blocks.recent_z, whole.recent_z)


def test_groups_left_as_files_for_the_workers_give_the_pipes_figures_and_leave_nothing(monkeypatch, tmp_path):
    from analytics.theft import features

    data, _ = build()
    for area in ("A", "B"):
        data.feeders_hourly[area] = 1.04 * np.nansum(data.hourly[data.area == area], axis=0)
    monkeypatch.setattr(theft_data, "HOURLY_CHUNK_METERS", 4)
    saved: list[str] = []
    save = np.save

    def spy(path, array, *args, **kw):
        saved.append(str(path))
        return save(path, array, *args, **kw)

    monkeypatch.setattr(np, "save", spy)
    monkeypatch.setattr(features, "HAND_OVER_DIR", str(tmp_path))
    as_files = compute_features(data)
    assert len(saved) == len(list(data.hourly_chunks())) == 2  # a pool (two areas): each group as a file
    assert all(p.startswith(str(tmp_path)) for p in saved)
    assert list(tmp_path.iterdir()) == []  # each removed once its group was done, then the folder
    monkeypatch.setattr(features, "HAND_OVER_DIR", None)
    saved.clear()
    through_pipe = compute_features(data)
    assert saved == []
    np.testing.assert_array_equal(as_files.X, through_pipe.X)
    assert as_files.interval is not None and through_pipe.interval is not None
    np.testing.assert_array_equal(as_files.interval.attributed, through_pipe.interval.attributed)

    # A full folder (a container's small /dev/shm): the group that does not fit goes through the pipe.
    def full_after_one(path, array, *args, **kw):
        saved.append(str(path))
        if len(saved) > 1:
            with open(path, "wb") as fh:
                fh.write(b"\x93NUMPY partial")
            raise OSError(28, "No space left on device")
        return save(path, array, *args, **kw)

    monkeypatch.setattr(np, "save", full_after_one)
    monkeypatch.setattr(features, "HAND_OVER_DIR", str(tmp_path))
    partly = compute_features(data)
    assert len(saved) == 2 and list(tmp_path.iterdir()) == []
    np.testing.assert_array_equal(partly.X, through_pipe.X)


def test_no_hourly_data_no_progress_heard():
    data, _ = build()
    data.hourly = None
    heard: list[tuple[int, int]] = []
    compute_features(data, progress=lambda meters, of: heard.append((meters, of)))
    assert heard == []
