"""The networks of the deep-RL algorithms, and a user's own network in their place.

Every algorithm builds its networks here, one function per kind:

==========================  ==========================================  =========================
function                    used by (role names)                        default (CleanRL's)
==========================  ==========================================  =========================
:func:`actor_critic`        PPO, A2C, REINFORCE (``actor``, ``critic``)   tanh MLPs, orthogonal init
:func:`discrete_q_network`  DQN (``q``)                                  relu MLP, torch's init
:func:`deterministic_actor` DDPG, TD3 (``actor``)                        relu MLP, tanh into the box
:func:`continuous_q_network` DDPG, TD3, SAC (``critic``)                 relu MLP on ``[obs, action]``
:func:`squashed_gaussian_actor` SAC (``actor``)                          relu MLP, mean and log-std
==========================  ==========================================  =========================

**Your own network.**  Each of those algorithms' ``Config`` has a field
``network``: the import path ``"package.module:function"`` of a factory (or,
from Python, the function itself)::

    def factory(role: str, in_shape: tuple, out_dim: int):
        '''A network for ``role`` mapping float32 [N, *in_shape] -> [N, out_dim].'''
        return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(math.prod(in_shape), 128),
                                   torch.nn.ReLU(), torch.nn.Linear(128, out_dim))

It returns a ``torch.nn.Module`` (made functional by :func:`module_model`,
whose ``init(key)`` re-draws every parameter the way torch's own
``reset_parameters`` does, from the key), a :class:`funrl.nn.Model`, or
``None`` for funrl's default network of that role.  What each role receives
and must return:

- ``actor`` (PPO, A2C, REINFORCE): observations ``[N, *obs_shape]`` ->
  logits ``[N, num_actions]`` (Discrete) or the Gaussian's mean ``[N, act_dim]``
  (Box; the log-std is a separate state-independent parameter).
- ``critic`` (PPO, A2C, REINFORCE with ``baseline``): observations -> ``[N, 1]``.
- ``q`` (DQN): observations -> ``[N, num_actions]``.
- ``actor`` (DDPG, TD3): observations -> ``[N, act_dim]`` before the tanh;
  funrl squashes it with tanh and scales it into the action box.
- ``actor`` (SAC): observations -> ``[N, 2 * act_dim]``: the mean, then the raw
  log-std (funrl maps it into ``[-5, 2]`` with tanh, as CleanRL).
- ``critic`` (DDPG, TD3, SAC): ``Q(s, a)``; ``in_shape = (obs_dim + act_dim,)``,
  the flattened observation and the action concatenated -> ``[N, 1]``.
  TD3 and SAC build two critics from the one factory (independent params).

Shapes are checked when the algorithm is built (a clear error names the role,
what was expected and what came back).  The import path is what config.json
records, so ``funrl eval``, ``funrl export --format torchscript`` and
``--resume`` rebuild the same network (a module in the current directory is
found too); a lambda or local function works with ``make_train`` but
``funrl.run`` refuses it (it could not be rebuilt).
"""

from __future__ import annotations

import copy
import importlib
import math
import os
import re
import sys
from typing import Callable, Sequence

import torch

from funrl import nn
from funrl import random as jr

__all__ = [
    "actor_critic",
    "discrete_q_network",
    "deterministic_actor",
    "continuous_q_network",
    "squashed_gaussian_actor",
    "LOG_STD_MIN",
    "LOG_STD_MAX",
    "check_network",
    "network_import_path",
    "require_import_path",
    "resolve_network",
    "custom_network",
    "module_model",
    "torch_init",
]

#: CleanRL's bounds of SAC's policy log-std.
LOG_STD_MIN, LOG_STD_MAX = -5.0, 2.0

_IMPORT_PATH = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")


# ----------------------------------------------------------------------------- naming a network
def network_import_path(fn: Callable) -> str | None:
    """``"module:qualname"`` if importing it gives back ``fn`` itself, else ``None`` (lambdas, locals, ``__main__``)."""
    module, qualname = getattr(fn, "__module__", None), getattr(fn, "__qualname__", None)
    if not module or not qualname or module == "__main__" or "<" in qualname:
        return None
    path = f"{module}:{qualname}"
    try:
        found = resolve_network(path)
    except (ImportError, AttributeError, ValueError):
        return None
    return path if found is fn else None


def check_network(config) -> None:
    """Validate ``config.network``: ``""``, ``"package.module:function"`` or a callable.

    An importable callable is replaced by its import path (config.json stores
    that); a lambda or local function stays as it is (fine for ``make_train``;
    ``funrl.run`` refuses it, see :func:`require_import_path`).
    """
    v = config.network
    if callable(v) and not isinstance(v, str):
        path = network_import_path(v)
        if path is not None:
            object.__setattr__(config, "network", path)  # frozen dataclass
        return
    if not isinstance(v, str) or (v and not _IMPORT_PATH.match(v)):
        raise ValueError(
            f"config.network: expected '' (the default networks), an import path 'package.module:function' "
            f"of a factory(role, in_shape, out_dim), or such a function, got {v!r}"
        )


def require_import_path(config) -> None:
    """Raise if ``config.network`` is a function config.json cannot name (what ``funrl.run`` needs)."""
    v = getattr(config, "network", "")
    if callable(v) and not isinstance(v, str):
        raise ValueError(
            f"config.network: {getattr(v, '__qualname__', v)!r} cannot be rebuilt from config.json (a lambda, a "
            f"local function or one defined in __main__); define the factory at the top level of an importable "
            f"module and pass it (or its path 'package.module:function'), or use make_train"
        )


def resolve_network(network: str | Callable) -> Callable | None:
    """The factory ``network`` names: ``None`` for ``""``, the function for ``"package.module:function"``.

    Raises:
      ValueError: the module or function cannot be found, or is not callable.
    """
    if callable(network) and not isinstance(network, str):
        return network
    if not network:
        return None
    if not isinstance(network, str) or not _IMPORT_PATH.match(network):
        raise ValueError(f"network: expected an import path 'package.module:function', got {network!r}")
    module_name, qualname = network.split(":")
    try:
        obj = _import(module_name)
    except ImportError as e:
        raise ValueError(f"network: cannot import module {module_name!r} of {network!r} ({e})") from None
    for part in qualname.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"network: module {module_name!r} has no {qualname!r} (from {network!r})")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ValueError(f"network: {network!r} is a {type(obj).__name__}, expected a function factory(role, in_shape, out_dim)")
    return obj


def _import(module_name: str):
    """Import ``module_name``, also from the current directory (the ``funrl`` script, unlike ``python -m``, has
    no current directory on its path, and a factory next to the user's files is the common case; uvicorn does
    the same for its ``module:app`` strings)."""
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        cwd = os.getcwd()
        if e.name != module_name.split(".")[0] or cwd in sys.path or "" in sys.path:
            raise
    sys.path.insert(0, cwd)
    try:
        return importlib.import_module(module_name)
    finally:
        sys.path.remove(cwd)


# ----------------------------------------------------------------------------- torch modules, key-driven
def _linear_bias(weight: torch.nn.Parameter) -> nn.Initializer:
    fan_in = nn.fans(tuple(weight.shape))[0] if weight.ndim >= 2 else 0
    if fan_in == 0:
        return nn.zeros
    return nn.torch_default_linear(fan_in)


def _norm_types() -> tuple:
    types = [torch.nn.LayerNorm, torch.nn.GroupNorm, torch.nn.modules.batchnorm._NormBase]
    if hasattr(torch.nn, "RMSNorm"):
        types.append(torch.nn.RMSNorm)
    return tuple(types)


def _rule(m: torch.nn.Module, pname: str, p: torch.Tensor) -> nn.Initializer | None:
    """torch's own initialiser of parameter ``pname`` of module ``m`` (its ``reset_parameters``), or None."""
    if isinstance(m, (torch.nn.Linear, torch.nn.modules.conv._ConvNd)):
        # kaiming_uniform_(a=sqrt(5)) is U(+-1/sqrt(fan_in)); the bias uses the weight's fan-in
        return nn.torch_default_linear() if pname == "weight" else _linear_bias(m.weight)
    if isinstance(m, _norm_types()):
        return nn.ones if pname == "weight" else nn.zeros
    if isinstance(m, torch.nn.Embedding):
        if m.padding_idx is None:
            return nn.normal(1.0)
        row = m.padding_idx

        def embedding(key, shape, dtype=torch.float32):
            w = jr.normal(key, shape, dtype)
            keep = torch.arange(shape[0], device=w.device) != row
            return w * keep[:, None].to(dtype)

        return embedding
    if isinstance(m, torch.nn.MultiheadAttention):
        if pname in ("in_proj_weight", "q_proj_weight", "k_proj_weight", "v_proj_weight"):
            return nn.glorot_uniform()
        if pname == "in_proj_bias":
            return nn.zeros
        if pname in ("bias_k", "bias_v"):
            return nn.glorot_normal()
        return None
    if isinstance(m, (torch.nn.RNNBase, torch.nn.RNNCellBase)):
        return nn.uniform(1.0 / math.sqrt(m.hidden_size)) if m.hidden_size > 0 else nn.zeros
    if isinstance(m, torch.nn.PReLU):
        return nn.constant(float(m.init))
    return None


def torch_init(module: torch.nn.Module) -> Callable[[torch.Tensor], dict]:
    """``init(key) -> params`` that re-draws every parameter of ``module`` as torch initialises it.

    The params are those of :func:`funrl.nn.from_module` (``named_parameters``
    then ``named_buffers``, the ``state_dict`` names).  Each parameter gets its
    own key and the rule of the module that owns it, as in torch's
    ``reset_parameters``:

    - ``Linear``, ``Conv*``, ``ConvTranspose*``: weight and bias
      ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``, fan-in of the weight;
    - ``LayerNorm``, ``GroupNorm``, ``BatchNorm*``, ``InstanceNorm*``,
      ``RMSNorm``: weight ones, bias zeros;
    - ``Embedding``: ``N(0, 1)``, the ``padding_idx`` row zero;
    - ``MultiheadAttention``: Xavier-uniform projections, zero ``in_proj_bias``
      and ``out_proj.bias``, Xavier-normal ``bias_k`` / ``bias_v``;
    - ``RNN``, ``LSTM``, ``GRU`` and their cells: ``U(-1/sqrt(hidden), 1/sqrt(hidden))``;
    - ``PReLU``: its ``init`` value;
    - inside a ``torch.nn.Transformer``: Xavier-uniform for every matrix (its
      ``_reset_parameters``).

    Buffers (running statistics, ...) keep the module's current values.
    ``vmap(init)(keys)`` gives one independent draw per key.

    Raises:
      ValueError: a parameter owned by a module type not listed above; the
        message names its path (pass your own ``init`` to :func:`module_model`).
    """
    if not isinstance(module, torch.nn.Module):
        raise TypeError(f"module: expected a torch.nn.Module, got {type(module).__name__}")
    rules: list = []  # (name, shape, dtype, initialiser)
    seen: set = set()
    overrides: dict = {}
    xavier_prefixes: list = []
    unknown: list = []
    for mname, m in module.named_modules():
        prefix = f"{mname}." if mname else ""
        if isinstance(m, torch.nn.MultiheadAttention) and m.out_proj.bias is not None:
            overrides[f"{prefix}out_proj.bias"] = nn.zeros
        if isinstance(m, torch.nn.Transformer):
            xavier_prefixes.append(prefix)
        for pname, p in m.named_parameters(recurse=False):
            if id(p) in seen:
                continue
            seen.add(id(p))
            full = prefix + pname
            rule = overrides.get(full) or _rule(m, pname, p)
            if p.ndim > 1 and any(full.startswith(x) for x in xavier_prefixes):
                rule = nn.glorot_uniform()
            if rule is None:
                unknown.append(f"{full!r} ({type(m).__name__})")
            rules.append((full, tuple(p.shape), p.dtype, rule))
    if unknown:
        raise ValueError(
            f"network: funrl does not know how torch initialises parameter {', '.join(unknown)}; it re-draws "
            f"Linear, Conv*, norm layers, Embedding, MultiheadAttention, RNN/LSTM/GRU and PReLU parameters. "
            f"Pass init= to funrl.algorithms.networks.module_model (init(key) -> params dict, names as "
            f"funrl.nn.from_module gives them) and return that Model from the factory"
        )
    buffers = [(name, b.detach().clone()) for name, b in module.named_buffers()]

    def init(key: torch.Tensor) -> dict:
        keys = jr.split(key, max(1, len(rules)))
        params = {name: rule(keys[i], shape, dtype) for i, (name, shape, dtype, rule) in enumerate(rules)}
        for name, b in buffers:
            # adding to a tensor made from the key keeps the result batched under vmap
            params[name] = key.new_zeros(b.shape, dtype=b.dtype) + b.to(key.device)
        return params

    return init


def module_model(module: torch.nn.Module, init: Callable[[torch.Tensor], dict] | None = None) -> nn.Model:
    """A ``torch.nn.Module`` as a :class:`funrl.nn.Model` whose ``init`` draws from a key.

    Args:
      module: any module; never modified.  Its parameters' current values are
        not used (``init`` re-draws them); dropout layers should have ``p=0``
        (torch's dropout draws from the global RNG, which funrl never uses).
      init: ``init(key) -> params`` (names as :func:`funrl.nn.from_module`);
        default :func:`torch_init` (torch's own initialisation, key-driven).

    Returns:
      ``Model(init, apply)``; ``apply(params, x)`` runs ``module.forward(x)``
      with ``params`` (``torch.func.functional_call``).
    """
    _, apply = nn.from_module(module)
    if init is None:
        init = torch_init(module)
    elif not callable(init):
        raise TypeError(f"init: expected a function init(key) -> params, got {type(init).__name__}")
    template = copy.deepcopy(module)

    def apply_one(params: dict, x: torch.Tensor) -> torch.Tensor:
        if torch.jit.is_tracing():
            # functional_call refuses to run under torch.jit.trace (funrl export): trace a copy holding the params
            return _with_params(template, params)(x)
        return apply(params, x)

    return nn.Model(init, apply_one)


def _with_params(template: torch.nn.Module, params: dict) -> torch.nn.Module:
    """A copy of ``template`` whose parameters and buffers are the tensors of ``params`` (no copies of them)."""
    module = copy.deepcopy(template)
    for name, t in params.items():
        owner_name, _, leaf = name.rpartition(".")
        owner = module.get_submodule(owner_name)
        if leaf in owner._parameters:
            owner._parameters[leaf] = torch.nn.Parameter(t, requires_grad=False)
        else:
            owner._buffers[leaf] = t
    return module


def custom_network(network: str | Callable, role: str, in_shape: Sequence[int], out_dim: int) -> nn.Model | None:
    """The user's network for ``role``: float32 ``[N, *in_shape] -> [N, out_dim]``, or None for the default.

    Calls the factory ``network`` names (see the module docstring), turns a
    ``torch.nn.Module`` into a Model (:func:`module_model`), and runs it once
    on zeros to check the output shape.  The Model's ``apply`` accepts
    observations of any shape with ``N * prod(in_shape)`` elements (e.g.
    flattened) and reshapes them to ``[N, *in_shape]``.

    Raises:
      ValueError: the factory cannot be found, returns something else than a
        Module / Model / None, or a network whose output is not ``[N, out_dim]``.
    """
    factory = resolve_network(network)
    if factory is None:
        return None
    in_shape = tuple(int(s) for s in in_shape)
    name = network if isinstance(network, str) else getattr(network, "__qualname__", repr(network))
    # building a torch module draws its (discarded) init from torch's global RNG: leave the user's stream alone
    with torch.random.fork_rng(devices=[]):
        net = factory(role, in_shape, int(out_dim))
    if net is None:
        return None
    if isinstance(net, torch.nn.Module):
        net = module_model(net)
    elif not isinstance(net, nn.Model):
        raise ValueError(
            f"network: {name}({role!r}, {in_shape}, {out_dim}) returned a {type(net).__name__}; expected a "
            f"torch.nn.Module, a funrl.nn.Model or None (funrl's default {role})"
        )
    model = net

    def apply(params, x: torch.Tensor) -> torch.Tensor:
        return model.apply(params, x.reshape((x.shape[0],) + in_shape).to(torch.float32))

    with torch.no_grad():
        params = model.init(jr.key(0))
        y = apply(params, torch.zeros((2,) + in_shape))
    if not isinstance(y, torch.Tensor) or tuple(y.shape) != (2, out_dim):
        got = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
        raise ValueError(
            f"network: the {role} network of {name} must map [N, {', '.join(map(str, in_shape))}] to "
            f"[N, {out_dim}]; for N=2 it gave {got}"
        )
    return nn.Model(model.init, apply)


# ----------------------------------------------------------------------------- the algorithms' networks
def actor_critic(
    obs_shape: Sequence[int],
    num_outputs: int,
    hidden_sizes: Sequence[int],
    activation: str,
    network: str | Callable = "",
) -> tuple[nn.Model, nn.Model]:
    """PPO's, A2C's and REINFORCE's actor and critic: ``(actor, critic)``.

    Default: CleanRL's separate MLPs, orthogonal init with gain ``sqrt(2)`` and
    zero biases, the actor's head gain 0.01, the critic's 1.0.

    Args:
      obs_shape: the observation shape; ``apply`` takes ``[N, *obs_shape]``
        (or flattened ``[N, obs_dim]``).
      num_outputs: the actor's outputs (logits, or the Gaussian's mean).
      hidden_sizes, activation: the default MLPs' hidden layers.
      network: a factory (see the module docstring); roles ``"actor"`` and ``"critic"``.

    Returns:
      ``actor.apply(params, obs) -> [N, num_outputs]``, ``critic.apply(params, obs) -> [N, 1]``.
    """
    obs_dim = int(math.prod(obs_shape))
    gain = math.sqrt(2.0)

    def default(out: int, head_gain: float) -> nn.Model:
        net = nn.mlp(
            [obs_dim, *hidden_sizes, out],
            activation=activation,
            w_init=nn.orthogonal(gain),
            b_init=nn.zeros,
            final_w_init=nn.orthogonal(head_gain),
        )
        return nn.Model(net.init, lambda params, obs: net.apply(params, _flat(obs)))

    actor = custom_network(network, "actor", obs_shape, num_outputs) or default(num_outputs, 0.01)
    critic = custom_network(network, "critic", obs_shape, 1) or default(1, 1.0)
    return actor, critic


def discrete_q_network(
    obs_shape: Sequence[int], num_actions: int, hidden_sizes: Sequence[int], activation: str, network: str | Callable = ""
) -> nn.Model:
    """DQN's Q-network: ``apply(params, obs [N, ...]) -> q [N, num_actions]``.

    Default: CleanRL's plain ``nn.Linear`` layers (torch's default init, which
    is :func:`funrl.nn.mlp`'s).  ``network``: role ``"q"``.
    """
    custom = custom_network(network, "q", obs_shape, num_actions)
    if custom is not None:
        return custom
    net = nn.mlp([int(math.prod(obs_shape)), *hidden_sizes, num_actions], activation=activation)
    return nn.Model(net.init, lambda params, obs: net.apply(params, _flat(obs)))


def _box_affine(spec, device):
    return ((spec.high - spec.low) / 2).to(device), ((spec.high + spec.low) / 2).to(device)


def deterministic_actor(spec, hidden_sizes: Sequence[int], network: str | Callable = "") -> nn.Model:
    """DDPG's and TD3's actor (CleanRL's ``Actor``): tanh output scaled into ``[low, high]``.

    Args:
      spec: the env's :class:`funrl.algorithms.continuous.BoxSpec` (sizes and bounds).
      hidden_sizes: the default relu MLP's hidden layers.
      network: a factory; role ``"actor"`` gives the pre-tanh ``[N, act_dim]``.

    Returns:
      ``apply(params, obs [N, obs_dim]) -> action [N, act_dim]`` inside the box.
    """
    net = custom_network(network, "actor", _obs_shape(spec), spec.act_dim)
    if net is None:
        net = nn.mlp([spec.obs_dim, *hidden_sizes, spec.act_dim], activation="relu")

    def apply(params, obs):
        scale, bias = _box_affine(spec, obs.device)
        return torch.tanh(net.apply(params, obs)) * scale + bias

    return nn.Model(net.init, apply)


def continuous_q_network(spec, hidden_sizes: Sequence[int], network: str | Callable = "") -> nn.Model:
    """DDPG's, TD3's and SAC's critic (CleanRL's ``QNetwork``): an MLP on ``concat(obs, action)``.

    ``apply(params, obs [N, obs_dim], action [N, act_dim]) -> q [N]``.
    ``network``: role ``"critic"`` with ``in_shape = (obs_dim + act_dim,)``.
    """
    in_dim = spec.obs_dim + spec.act_dim
    net = custom_network(network, "critic", (in_dim,), 1) or nn.mlp([in_dim, *hidden_sizes, 1], activation="relu")

    def apply(params, obs, action):
        return net.apply(params, torch.cat([obs, action], -1)).squeeze(-1)

    return nn.Model(net.init, apply)


def squashed_gaussian_actor(spec, hidden_sizes: Sequence[int], network: str | Callable = ""):
    """SAC's actor (CleanRL's): an MLP giving mean and log-std of a tanh-squashed Gaussian.

    One output layer of size ``2 |A|`` split in two is CleanRL's two heads
    (``fc_mean`` and ``fc_logstd``): both are drawn from torch's default init
    with the same fan-in.  ``network``: role ``"actor"`` giving ``[N, 2 |A|]``.

    Returns:
      ``(init, distribution, sample)``:
      ``distribution(params, obs [N, obs_dim]) -> TanhNormal`` (pre-squash
      ``loc``/``scale`` ``[N, |A|]``, actions in ``(-1, 1)``);
      ``sample(params, key, obs) -> (action [N, |A|] in the box, log_prob [N])``.
    """
    from funrl.distributions import TanhNormal

    net = custom_network(network, "actor", _obs_shape(spec), 2 * spec.act_dim)
    if net is None:
        net = nn.mlp([spec.obs_dim, *hidden_sizes, 2 * spec.act_dim], activation="relu")

    def distribution(params, obs):
        mean, log_std = torch.chunk(net.apply(params, obs), 2, dim=-1)
        log_std = LOG_STD_MIN + 0.5 * (LOG_STD_MAX - LOG_STD_MIN) * (torch.tanh(log_std) + 1)
        return TanhNormal(mean, torch.exp(log_std))

    def sample(params, key, obs):
        scale, bias = _box_affine(spec, obs.device)
        y, log_prob = distribution(params, obs).sample_and_log_prob(key)
        # change of variables for a = y * scale + bias
        return y * scale + bias, log_prob - torch.log(scale).sum()

    return net.init, distribution, sample


def _flat(obs: torch.Tensor) -> torch.Tensor:
    return obs.reshape(obs.shape[0], -1).to(torch.float32)


def _obs_shape(spec) -> tuple:
    shape = getattr(spec, "obs_shape", None)
    return tuple(shape) if shape else (spec.obs_dim,)
