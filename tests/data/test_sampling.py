import numpy as np
from scipy import stats

from constcl.data.sampling import ClipSpec, looped_clip_indices, sample_gap, sample_starts

CLIP = ClipSpec(16, 2)


def test_clip_span_and_hand_computed_indices():
    assert CLIP.span == 31 and CLIP.key_frame == 8
    assert looped_clip_indices(3, 40, CLIP).tolist() == list(range(3, 34, 2))


def test_gap_follows_the_linear_density_ks():
    rng = np.random.default_rng(0)
    m = 200.0
    gaps = np.array([sample_gap(m, rng) for _ in range(10_000)])
    # CDF of f(d) = 2 (M - d) / M^2 on [0, M]: F(d) = 1 - (1 - d / M)^2
    result = stats.kstest(gaps, lambda d: 1.0 - (1.0 - np.clip(d, 0, m) / m) ** 2)
    assert result.pvalue > 1e-3


def test_integer_start_gaps_fit_the_linear_density_chi_square():
    rng = np.random.default_rng(1)
    num_frames = 1030  # M = 1030 - 30 = 1000 start positions
    gaps = np.array(
        [abs(b - a) for a, b in (sample_starts(num_frames, CLIP, rng) for _ in range(10_000))]
    )
    counts = np.histogram(gaps, bins=10, range=(0, 1000))[0]
    edges = np.linspace(0, 1, 11)
    cdf = 1 - (1 - edges) ** 2
    expected = np.diff(cdf) * len(gaps)
    assert stats.chisquare(counts, expected).pvalue > 1e-3


def test_starts_fit_in_the_video_and_order_is_swapped_half_the_time():
    rng = np.random.default_rng(2)
    num_frames = 100
    starts = np.array([sample_starts(num_frames, CLIP, rng) for _ in range(10_000)])
    assert starts.min() >= 0 and starts.max() <= num_frames - CLIP.span
    first_later = int((starts[:, 0] > starts[:, 1]).sum())
    different = int((starts[:, 0] != starts[:, 1]).sum())
    assert stats.binomtest(first_later, different, 0.5).pvalue > 1e-3


def test_short_videos_loop():
    rng = np.random.default_rng(3)
    for num_frames in (1, 7, 10, 30):
        for _ in range(50):
            for start in sample_starts(num_frames, CLIP, rng):
                idx = looped_clip_indices(start, num_frames, CLIP)
                assert len(idx) == 16 and idx.min() >= 0 and idx.max() < num_frames
                assert np.all((np.diff(idx) - 2) % num_frames == 0)


def test_exactly_one_clip_long_video_has_no_gap():
    rng = np.random.default_rng(4)
    assert {sample_starts(31, CLIP, rng) for _ in range(20)} == {(0, 0)}
