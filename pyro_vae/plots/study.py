"""Figures of studies over several runs: the amortization-gap bars, the sweep figure and M2's accuracy by
labelled-set size."""

from __future__ import annotations

from matplotlib.figure import Figure


def plot_amortization_gap(gap: dict) -> Figure:
    """Bar figure: log p(x) - L[q_amortized] split into approximation and amortization gaps."""
    fig = Figure(figsize=(5.5, 4))
    ax = fig.subplots()
    parts = [("approximation gap\nlog p(x) - L[q*]", gap["approximation_gap"], "C0"),
             ("amortization gap\nL[q*] - L[q amortized]", gap["amortization_gap"], "C1")]
    bottom = 0.0
    for label, value, color in parts:
        ax.bar(["inference gap"], [value], bottom=[bottom], color=color, label=f"{label.splitlines()[0]}: {value:.2f}")
        bottom += value
    ax.bar(["amortization\ngap alone"], [gap["amortization_gap"]], color="C1")
    ax.set_ylabel("nats per image")
    ax.set_title("Inference gap on the test set (Cremer et al. 2018)")
    ax.legend(loc="upper right", fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    return fig


def plot_sweep(result: dict, title: str = "") -> Figure:
    """Two panels for a sweep over one config value (``sweep.json``'s ``rows``).

    Left: test -ELBO and, where the pixels have a proper density, -log p(x)
    (importance sampled, +- 2 standard errors; for a run whose q is a point mass, ``point_mass``, the one-sample
    bound, marked apart) against the value. Right: the reconstruction term -E_q log p(x|z) against KL(q || p),
    one point per value: the rate-distortion trade-off a beta-VAE moves along. Values that are names (variants)
    are points, not joined by lines.
    """
    rows, key = result["rows"], result["key"]
    labels = [str(r["value"]) for r in rows]
    numeric = all(isinstance(r["value"], (int, float)) for r in rows)
    xs = [r["value"] for r in rows] if numeric else list(range(len(rows)))
    fig = Figure(figsize=(12, 4.5))
    left, right = fig.subplots(1, 2)
    line = "-" if numeric else ""
    left.plot(xs, [r["test_loss"] for r in rows], "o" + line, label="-ELBO (test)")
    if all(r["log_likelihood"] is not None for r in rows):
        for bound, fmt, label in ((False, "s" + line, f"-log p(x), K = {result['num_samples']} (test)"),
                                  (True, "D", "-log p(x) bound, a point-mass q (K = 1; = -ELBO)")):
            picked = [(x, r) for x, r in zip(xs, rows) if r.get("point_mass", False) == bound]
            if picked:
                left.errorbar([x for x, _ in picked], [-r["log_likelihood"] for _, r in picked],
                              yerr=[2 * r["log_likelihood_stderr"] for _, r in picked], fmt=fmt, capsize=3,
                              label=label)
    if numeric and min(xs) > 0 and max(xs) / min(xs) >= 10:
        left.set_xscale("log")
        left.minorticks_off()
    left.set_xticks(xs)
    left.set_xticklabels(labels)
    left.set_xlabel(key)
    left.set_ylabel("nats per image")
    left.legend()
    left.grid(alpha=0.3)
    recon = [-r["test_recon"] for r in rows]
    kl = [r["test_kl"] for r in rows]
    right.plot(kl, recon, "o" + line, color="C2")
    for label, x, y in zip(labels, kl, recon):
        right.annotate(f"{key.rpartition('.')[2]} = {label}", (x, y), textcoords="offset points", xytext=(5, 5),
                       fontsize=9)
    right.set_xlabel("KL(q(z|x) || p(z))  (rate), nats per image")
    right.set_ylabel("-E_q log p(x|z)  (distortion), nats per image")
    right.set_title("Reconstruction vs KL on the test set")
    right.grid(alpha=0.3)
    fig.suptitle(title or f"Sweep over {key}")
    fig.tight_layout()
    return fig


def plot_accuracy_by_labelled(summary: list[dict], anchors: dict | None = None, reference: str = "reference",
                              title: str = "") -> Figure:
    """Two panels, M2's classifier q(y | x) and the classifier trained on the labelled images alone: the test
    accuracy of each run (a dot per labelled set) and their mean +- its 95% bound against the labelled-set size
    (``summary``: :func:`pyro_vae.workflow.report.accuracy_summary`), beside a reference's mean +- bound
    (``anchors``: ``{labelled: ((M2, bound), (baseline, bound))}``, named ``reference`` in the legend)."""
    fig = Figure(figsize=(12, 4.5))
    panels = fig.subplots(1, 2, sharey=True)
    xs = range(len(summary))
    for panel, (name, sets_key, mean_key, which) in zip(panels, (
            ("M2: q(y | x)", "sets", "mean", 0), ("classifier on the labelled images alone", "baseline_sets",
                                                   "baseline_mean", 1))):
        labels = {"set": "one labelled set", "mean": "mean of its sets +- 95% bound",
                  "anchor": f"{reference}: mean +- 95% bound"}

        def label(kind: str) -> str | None:  # each legend entry once, on the first point drawn of its kind
            return labels.pop(kind, None)

        for x, group in zip(xs, summary):
            sets = group[sets_key]
            panel.plot([x - 0.12] * len(sets), sets, "o", color="C0", alpha=0.45, markersize=5, label=label("set"))
            mean, bound = group[mean_key]
            if bound is not None:
                panel.errorbar([x], [mean], yerr=[bound], fmt="s", color="C0", capsize=4, label=label("mean"))
            anchor = (anchors or {}).get(group["labelled"])
            if anchor:
                panel.errorbar([x + 0.12], [anchor[which][0]], yerr=[anchor[which][1]], fmt="D", color="C1",
                               capsize=4, label=label("anchor"))
        panel.set_xticks(list(xs))
        panel.set_xticklabels([f"{g['labelled']:,}" for g in summary])
        panel.set_xlabel("labelled images")
        panel.set_title(name)
        panel.grid(alpha=0.3)
        panel.legend(loc="lower right", fontsize=9)
    panels[0].set_ylabel("test accuracy")
    if title:
        fig.suptitle(title)
    return fig
