"""(m, s) in training: the Taylor orders and squarings a short training run uses.

A short run of the ``default`` training config; its ``expm_stats.jsonl`` histograms of
the Taylor order m and the squarings s per layer type are summed, tabulated and plotted.
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
from pathlib import Path

from .harness import Section, markdown_table


def run(steps: int, out_png: Path) -> Section:
    """Train ``steps`` steps of the default config; (m, s) shares per layer type.

    Args:
      steps: training steps (statistics are logged 10 times).
      out_png: the histogram figure to write.

    Returns:
      A table of shares and the figure.
    """
    from flows import _plotting, configs, train

    config = dataclasses.replace(
        configs.get_config("default"),
        num_train_steps=steps,
        log_every_steps=max(steps // 10, 1),
        eval_every_steps=10 * steps,
        checkpoint_every_steps=10 * steps,
        num_eval_batches=1,
        num_samples=4,
    )
    with tempfile.TemporaryDirectory() as workdir:
        train.train_and_evaluate(config, workdir, progress=False)
        rows = [
            json.loads(line)
            for line in (Path(workdir) / "expm_stats.jsonl").read_text().splitlines()
        ]
    panels: dict[str, dict[str, int]] = {}
    for row in rows:
        for what in ("order", "squarings", "steps"):
            if what not in row:
                continue
            panel = panels.setdefault(f"{row['kind']}: {'m' if what == 'order' else 's'}", {})
            for k, v in row[what].items():
                panel[k] = panel.get(k, 0) + v
    out_png.parent.mkdir(parents=True, exist_ok=True)
    _plotting.plot_histograms(
        out_png, panels, title=f"(m, s) used over {steps} training steps (default config)"
    )
    table_rows = [
        [
            name,
            ", ".join(
                f"{k}: {100 * v / sum(c.values()):.1f}%"
                for k, v in sorted(c.items(), key=lambda kv: float(kv[0]))
            ),
        ]
        for name, c in panels.items()
    ]
    return Section(
        f"(m, s) over a {steps}-step run of the `default` training config "
        f"(opt15, float32 tolerance), logged every {config.log_every_steps} steps:\n\n"
        + markdown_table(["layer: value", "share of exponentials"], table_rows)
        + f"\n\n![(m, s) histograms]({out_png.name})",
        {"steps": steps, "counts": panels},
    )
