"""The MuJoCo models of the locomotion families: gymnasium's MuJoCo v5 assets, loaded once per process.

The XML files are the ones gymnasium ships (``gymnasium/envs/mujoco/assets``); nothing is copied, and only the
reference model (last item) edits the compiled physics, so by default the physics is gymnasium's. Details of loading
them:

* ``half_cheetah.xml`` uses the deprecated ``settotalmass`` compiler attribute, for which mujoco >= 4 emits
  a warning through its log handler, and the default handler appends it to ``MUJOCO_LOG.TXT`` in the working
  directory on every load. Models are therefore cached (one load per process) and loaded under a temporary
  warning callback: that one known message is dropped, any other is re-raised as a Python ``RuntimeWarning``.
  The attribute keeps its effect (total mass 14). Compiling an edited copy (``MjSpec``, below) raises the same
  notice as a Python ``UserWarning``, which is dropped the same way.
* With contact forces requested, the model gets one extra sensor (``framelinacc`` of its first body, the torso). Sensors
  never act on the dynamics; this one only makes MuJoCo run ``mj_rnePostConstraint`` inside each step, which
  fills ``cfrc_ext`` (external contact forces per body) for the batched simulator to read back.
* With the centre of mass requested, the model gets two sensors of its first body's subtree: ``subtreecom``
  (position, 3) then ``subtreelinvel`` (linear velocity, 3), the two quantities rllab's ``MujocoEnv`` read as
  ``com_subtree`` and ``body_comvels`` (docs/reproduction.md). They are read from ``sensordata`` at the offset
  ``centre_of_mass_adr(model)``.
* With the reference's model requested (``REFERENCE_MODEL``: Ant and HalfCheetah), the compiled copy takes the MAML
  reference's time step and contact impedance, the two physical settings in which its rllab ``ant.xml`` differs from
  gymnasium's (docs/reproduction.md, "The reference's Ant"); nothing else changes. The start state is the
  environment's part (``ReferenceModel.init_qpos`` and the noise scales), and for HalfCheetah, whose rllab file has
  gymnasium's physics, the only difference. Each of the three parts can be taken alone (``REFERENCE_PARTS``,
  ``reference_parts``), to see which of them matters.
"""

from __future__ import annotations

import functools
import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import gymnasium
import mujoco
import numpy as np

#: gymnasium's MuJoCo asset directory
ASSET_DIR = Path(gymnasium.__file__).parent / "envs" / "mujoco" / "assets"
#: physics steps per environment step (gymnasium v5 default for HalfCheetah, Ant and Humanoid)
FRAME_SKIP = 5
#: robot name -> XML file in ``ASSET_DIR`` (the files gymnasium's v5 environments load)
ROBOT_XML = {
    "half_cheetah": "half_cheetah.xml",
    "ant": "ant.xml",
    "hopper": "hopper.xml",
    "walker2d": "walker2d_v5.xml",
    "humanoid": "humanoid.xml",
}
#: robot name -> physics steps per environment step (gymnasium v5's ``frame_skip``)
ROBOT_FRAME_SKIP = {"half_cheetah": 5, "ant": 5, "hopper": 4, "walker2d": 4, "humanoid": 5}
#: the name of the sensor added to trigger ``cfrc_ext`` computation
CONTACT_SENSOR = "maml_rl_cfrc_ext_trigger"
#: the names of the sensors added for the torso subtree's centre of mass: position, then linear velocity
COM_SENSORS = ("maml_rl_subtree_com", "maml_rl_subtree_linvel")
#: the parts of a reference model that can be taken one by one: its time step (stepped once per env step), its
#: contact impedance (both compiled into the model) and its start state (pose and noise, drawn by the environment)
REFERENCE_PARTS = ("time_step", "contact_impedance", "start_state")


@dataclass(frozen=True)
class ReferenceModel:
    """Where the MAML reference's rllab model of a robot differs from gymnasium's v5 file, in its physics and its
    start state (docs/reproduction.md, "The reference's Ant").

    Attributes:
        timestep: seconds per physics step (``<option timestep>``); rllab stepped it once per env step.
        solimp: every geom's contact impedance (MuJoCo's five values; rllab's files gave the first three and MuJoCo
            fills the other two with their defaults 0.5 and 2).
        init_qpos: the start pose ``[nq]`` (the file's ``<numeric name="init_qpos">``, which rllab's ``MujocoEnv``
            reads and gymnasium does not).
        qpos_noise_std, qvel_noise_std: standard deviations of the normal noise rllab's ``reset_mujoco`` adds to
            ``init_qpos`` and to zero velocities.
    """

    timestep: float
    solimp: tuple[float, float, float, float, float]
    init_qpos: tuple[float, ...]
    qpos_noise_std: float
    qvel_noise_std: float


#: robot -> its reference model: cbfinn/maml_rl ``vendor/mujoco_models/ant.xml`` (``timestep="0.02"``, ``solimp=".8
#: .8 .01"`` in the default class of every geom, floor included; the torso at 0.55 with the ankles bent to ±1 rad) and
#: ``half_cheetah.xml`` (gymnasium's file but for formatting and a camera: ``timestep="0.01"``, ``solimp="0.0 0.8
#: 0.01"``, no ``init_qpos``, so rllab started from ``qpos0``), with ``rllab/envs/mujoco/mujoco_env.py``
#: (``reset_mujoco``: N(0, 0.01) on qpos, N(0, 0.1) on qvel)
REFERENCE_MODEL: dict[str, ReferenceModel] = {
    "ant": ReferenceModel(
        timestep=0.02,
        solimp=(0.8, 0.8, 0.01, 0.5, 2.0),
        init_qpos=(0.0, 0.0, 0.55, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, -1.0, 0.0, -1.0, 0.0, 1.0),
        qpos_noise_std=0.01,
        qvel_noise_std=0.1,
    ),
    "half_cheetah": ReferenceModel(
        timestep=0.01,
        solimp=(0.0, 0.8, 0.01, 0.5, 2.0),
        init_qpos=(0.0,) * 9,
        qpos_noise_std=0.01,
        qvel_noise_std=0.1,
    ),
}

_KNOWN_LOAD_WARNINGS = ("compiler attribute 'settotalmass' is deprecated",)


def reference_parts(value: object) -> tuple[str, ...]:
    """The parts of the reference model that the family option ``reference_model`` takes, in ``REFERENCE_PARTS``
    order: ``True`` all of them, ``False`` none, or a list of part names. ``ValueError`` (one line) for anything
    else, an unknown name or a name given twice."""
    if isinstance(value, bool | np.bool_):
        return REFERENCE_PARTS if value else ()
    if not isinstance(value, list | tuple) or not all(isinstance(name, str) for name in value):
        raise ValueError(f"reference_model must be a bool or a list of parts {list(REFERENCE_PARTS)}, got {value!r}")
    unknown = sorted(set(value) - set(REFERENCE_PARTS))
    if unknown:
        raise ValueError(f"reference_model: unknown part(s) {unknown}; valid parts: {list(REFERENCE_PARTS)}")
    if len(set(value)) != len(value):
        raise ValueError(f"reference_model: a part is named twice in {list(value)}")
    return tuple(name for name in REFERENCE_PARTS if name in value)


@contextmanager
def _quiet_mujoco_log() -> Iterator[list[str]]:
    """Route MuJoCo warnings (of this block, caller's thread) into a list instead of ``MUJOCO_LOG.TXT``."""
    messages: list[str] = []
    previous = mujoco.get_mju_user_warning()
    mujoco.set_mju_user_warning(messages.append)
    try:
        yield messages
    finally:
        mujoco.set_mju_user_warning(previous)
    for message in messages:
        if not message.startswith(_KNOWN_LOAD_WARNINGS):
            warnings.warn(f"MuJoCo: {message}", RuntimeWarning, stacklevel=3)


@functools.cache
def load_model(
    robot: str, contact_forces: bool = False, centre_of_mass: bool = False,
    reference_model: bool | tuple[str, ...] = False,
) -> mujoco.MjModel:
    """The compiled model of ``robot`` (a key of ``ROBOT_XML``), cached per process.

    Args:
        robot: a key of ``ROBOT_XML``.
        contact_forces: add the sensor that makes every step compute ``cfrc_ext`` (see module docstring).
        centre_of_mass: add the sensors of the torso subtree's centre of mass (see module docstring).
        reference_model: the MAML reference's time step and contact impedance (``REFERENCE_MODEL``; see module
            docstring): ``True`` both, or a tuple of ``REFERENCE_PARTS`` (``start_state`` does not change the
            model).

    Returns:
        A shared ``MjModel``: treat it as read-only (``mujoco.batch.Batch`` copies it).
    """
    if robot not in ROBOT_XML:
        raise ValueError(f"unknown robot {robot!r}; valid robots: {sorted(ROBOT_XML)}")
    parts = reference_parts(reference_model)
    if parts and robot not in REFERENCE_MODEL:
        raise ValueError(f"no reference model for {robot!r}; robots with one: {sorted(REFERENCE_MODEL)}")
    physics = [part for part in parts if part != "start_state"]
    path = str(ASSET_DIR / ROBOT_XML[robot])
    with _quiet_mujoco_log():
        if not (contact_forces or centre_of_mass or physics):
            return mujoco.MjModel.from_xml_path(path)
        spec = mujoco.MjSpec.from_file(path)
        if physics:
            reference = REFERENCE_MODEL[robot]
            if "time_step" in physics:
                spec.option.timestep = reference.timestep
            if "contact_impedance" in physics:
                for geom in spec.geoms:
                    geom.solimp = list(reference.solimp)
        torso = spec.bodies[1].name  # bodies[0] is the world
        sensors = [(CONTACT_SENSOR, mujoco.mjtSensor.mjSENS_FRAMELINACC)] if contact_forces else []
        if centre_of_mass:
            kinds = (mujoco.mjtSensor.mjSENS_SUBTREECOM, mujoco.mjtSensor.mjSENS_SUBTREELINVEL)
            sensors += zip(COM_SENSORS, kinds, strict=True)
        for name, kind in sensors:
            sensor = spec.add_sensor()
            sensor.name, sensor.type = name, kind
            sensor.objtype, sensor.objname = mujoco.mjtObj.mjOBJ_BODY, torso
        with warnings.catch_warnings():
            for known in _KNOWN_LOAD_WARNINGS:
                warnings.filterwarnings("ignore", message=re.escape(known), category=UserWarning)
            return spec.compile()


def centre_of_mass_adr(model: mujoco.MjModel) -> int:
    """Where the centre-of-mass sensors start in ``sensordata``: position at ``[adr, adr + 3)``, linear velocity at
    ``[adr + 3, adr + 6)``; ``ValueError`` for a model loaded without ``centre_of_mass``."""
    ids = [mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_SENSOR, name) for name in COM_SENSORS]
    if min(ids) < 0:
        raise ValueError("the model has no centre-of-mass sensors: load it with load_model(..., centre_of_mass=True)")
    position, velocity = (int(model.sensor_adr[i]) for i in ids)
    assert velocity == position + 3, "the velocity sensor follows the position sensor"
    return position
