"""The machine sound models, one module per machine type, and their registry.

2026 development set: `bearing` (bearingEmu), `fan`, `gearbox` (gearboxEmu), `slider`
(sliderEmu), `toycar` (ToyCar, ToyCarEmu, and ToyTrain for the 2025-style mono set),
`valve` (valveEmu). 2026 evaluation set: `toydrone`, `toothbrush`, `sewingmachine`,
`blower` (BlowerDustCollector), `sander`. `base` holds the interface (`Machine`,
`FaultStyle`, `grid`).
"""

from __future__ import annotations

from asdlib.synth.machines.base import FaultStyle, Machine, grid
from asdlib.synth.machines.bearing import Bearing
from asdlib.synth.machines.blower import BlowerDustCollector
from asdlib.synth.machines.fan import Fan
from asdlib.synth.machines.gearbox import Gearbox
from asdlib.synth.machines.sander import Sander
from asdlib.synth.machines.sewingmachine import SewingMachine
from asdlib.synth.machines.slider import Slider
from asdlib.synth.machines.toothbrush import ToothBrush
from asdlib.synth.machines.toycar import ToyCar, ToyCarEmu, ToyTrain
from asdlib.synth.machines.toydrone import ToyDrone
from asdlib.synth.machines.valve import Valve

#: Every sound model, by its name (the machine folder name it renders in the 2026 layout).
MODELS: dict[str, Machine] = {m.name: m for m in (
    Bearing(), Fan(), Gearbox(), Slider(), ToyCar(), ToyCarEmu(), Valve(),
    ToyDrone(), ToothBrush(), SewingMachine(), BlowerDustCollector(), Sander(), ToyTrain())}

__all__ = ["MODELS", "Machine", "FaultStyle", "grid", "Bearing", "BlowerDustCollector", "Fan",
           "Gearbox", "Sander", "SewingMachine", "Slider", "ToothBrush", "ToyCar", "ToyCarEmu",
           "ToyDrone", "ToyTrain", "Valve"]
