"""napari sample data: a two-channel stack from tpem-seg's simulator, with its exact labels."""

from __future__ import annotations

from typing import Any

#: Small enough to make in about a second on one core.
SHAPE = (16, 192, 192)
SPACING = (5.0, 1.0, 1.0)


def simulated_stack() -> list[tuple[Any, dict[str, Any], str]]:
    """Vessel and neuron channels ``(2, Z, Y, X)`` uint16 and their labels, at (5, 1, 1) µm."""
    # The simulator is moving to tpem_seg.sim; until then it lives in train.
    from tpem_seg.sim import simulate_volume

    sim = simulate_volume(SHAPE, spacing=SPACING, seed=0)
    image = {"channel_axis": 0, "name": [f"simulated {n}" for n in sim.channel_names], "scale": SPACING,
             "colormap": ["magenta", "green"], "blending": "additive"}
    labels = {"name": "simulated labels", "scale": SPACING,
              "metadata": {"tpem_seg": {"classes": ["background", "vessel", "neuron"]}}}
    return [(sim.image, image, "image"), (sim.labels, labels, "labels")]
