"""Figures of studies over several runs: the amortization-gap bars and the sweep figure."""

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
