import statistics

import pytest


def test_the_mean_bound_is_the_t_interval_of_the_mean():
    from pyro_vae.workflow.label_sets import mean_bound

    for values, dof_quantile in [([0.0, 2.0], 12.7062), ([0.0, 1.0, 2.0, 3.0, 4.0], 2.7764)]:
        n, mean = len(values), sum(values) / len(values)
        sd = (sum((v - mean) ** 2 for v in values) / (n - 1)) ** 0.5
        assert mean_bound(values) == pytest.approx((mean, dof_quantile * sd / n ** 0.5), abs=1e-4)
    assert mean_bound([0.0, 2.0], confidence=0.999)[1] == pytest.approx(636.619, abs=1e-3)  # t_{0.9995, 1}
    mean, bound = mean_bound([0.9209, 0.8509, 0.9238, 0.8395, 0.9250])  # experiments/README.md's mean with 100 labels
    assert (round(mean, 4), round(bound, 4)) == (0.8920, 0.0533)
    assert mean_bound([0.5]) == (0.5, None)
    with pytest.raises(ValueError, match="at least one value"):
        mean_bound([])


def test_the_welch_difference_is_the_interval_at_which_welchs_test_gives_the_confidence():
    """Checked against scipy's Welch test from summary statistics: with the reference mean moved so that the
    difference equals +- the half-width, the difference sits on the edge of the 95% interval (a two-sided p of
    0.05)."""
    from scipy.stats import t, ttest_ind_from_stats

    from pyro_vae.workflow.label_sets import welch_difference

    values, reference = [0.9575, 0.9543, 0.9563], (0.9487, 0.0038)  # 1,000 labels: three sets here, the tutorial's
    difference, bound = welch_difference(values, reference)
    assert (round(difference, 4), round(bound, 4)) == (0.0073, 0.0041)
    mean, sd = statistics.mean(values), statistics.stdev(values)
    reference_sd = 0.0038 * 5 ** 0.5 / 2.7764  # the bound of a t interval over five sets, undone
    for edge in (mean - bound, mean + bound):
        test = ttest_ind_from_stats(mean, sd, 3, edge, reference_sd, 5, equal_var=False)
        assert test.pvalue == pytest.approx(0.05, abs=1e-4)
    assert ttest_ind_from_stats(mean, sd, 3, reference[0], reference_sd, 5, equal_var=False).pvalue < 0.05
    # the reference's bound stays a 95% one when a 99% interval is asked for: only the quantile of nu changes
    wider = welch_difference(values, reference, confidence=0.99)
    assert wider[1] / bound == pytest.approx(t.ppf(0.995, 5.99) / t.ppf(0.975, 5.99), rel=1e-2)
    with pytest.raises(ValueError, match="at least two values on each side"):
        welch_difference([0.9], reference)
