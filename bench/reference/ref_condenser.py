"""Independent PyTorch reference of Condenser / coCondenser pre-training.

Written from docs/reference-spec.md (sections 2, 3, 6); not copied from
luyug/Condenser or luyug/GradCache. Used to check a Rust reimplementation for parity and to
measure a throughput baseline.

Contents
  CondenserRef      BertForMaskedLM backbone + `n_head_layers` BertLayers (the Condenser head).
  CoCondenserRef    CondenserRef + in-batch contrastive loss on last-layer CLS vectors.
  contrastive_loss  S = V V^T, diag = -inf, target = arange(N) ^ 1, CE mean (no temperature).
  gc_step           gradient-cache training step (two passes, RNG replay), single process.
  save_hf/load_hf   backbone in HF BertForMaskedLM layout (safetensors) + condenser_head.safetensors.

Conventions (spec section 2)
  * hidden_states[0] = embedding output, hidden_states[i] = output of encoder layer i (1-based),
    hidden_states[-1] = last layer.  Head input = [hs[-1][:, :1] ; hs[skip_from][:, 1:]].
  * The head uses the same padding mask as the backbone.  The mask is built with the same
    transformers helper the backbone uses (`create_bidirectional_mask`: None when nothing is
    padded, otherwise boolean for SDPA / additive finfo.min for eager).  The 2021 reference used
    an additive -10000 mask; both give exactly zero attention weight to padded keys in fp32/fp64
    (exp(-10000) underflows), so the difference is not observable.  If that helper cannot be
    imported (other transformers versions) we fall back to the -10000 additive mask.
  * No token_type_ids are passed (zeros); position ids 0..L-1.
  * MLM losses are CE means over positions with label != -100 (ignore_index=-100), on
    `lm.cls` (shared by the late and the head loss; decoder tied to word embeddings).
  * `mlm_masked_only=True` gathers the labelled positions before `lm.cls` (same loss value, less
    work).  Default False = the reference behaviour (logits for every position).
  * Single process only (world_size = 1): the contrastive batch is the local batch.
  * No batch-size dependent buffer (the reference's `co_target`) is stored; the target is built
    on the fly, so checkpoints do not depend on the batch size (spec 6.10).
  * Contrastive scores are computed in fp32 even under autocast (the reference ran them in fp16
    under AMP; with no temperature, |s| is O(100) and bf16 would round it to ~1 unit).
"""

from __future__ import annotations

import json
import os
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from transformers import BertConfig, BertForMaskedLM
from transformers.models.bert.modeling_bert import BertLayer

try:  # transformers >= 4.5x / 5.x
    from transformers.masking_utils import create_bidirectional_mask as _hf_bidir_mask
except Exception:  # pragma: no cover - older transformers
    _hf_bidir_mask = None

HEAD_FILE = "condenser_head.safetensors"


def _layer_out(out):
    # BertLayer returns a tensor in transformers 5.x and a tuple in 4.x.
    return out[0] if isinstance(out, (tuple, list)) else out


def additive_padding_mask(attention_mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Reference (transformers 4.2) extended mask: (1 - m)[:, None, None, :] * -10000."""
    return (1.0 - attention_mask[:, None, None, :].to(dtype)) * -10000.0


def mlm_ce(lm: BertForMaskedLM, hidden: torch.Tensor, labels: torch.Tensor, masked_only: bool) -> torch.Tensor:
    """CE mean over labels != -100 of lm.cls(hidden)."""
    vocab = lm.config.vocab_size
    if masked_only:
        sel = labels != -100
        logits = lm.cls(hidden[sel])
        return F.cross_entropy(logits.view(-1, vocab), labels[sel].view(-1))
    logits = lm.cls(hidden)
    return F.cross_entropy(logits.view(-1, vocab), labels.view(-1), ignore_index=-100)


class CondenserRef(nn.Module):
    """Condenser pre-training model (spec 2.1-2.3).

    forward(input_ids, attention_mask, labels) -> dict(loss, head_loss, late_loss, reps)
      loss = head_loss + late_loss  (late_mlm=True)  |  head_loss  (late_mlm=False)
      reps = last-layer CLS vectors [B, H] (what coCondenser contrasts; not a loss term here).
    """

    def __init__(
        self,
        lm_or_config,
        skip_from: int = 6,
        n_head_layers: int = 2,
        late_mlm: bool = True,
        mlm_masked_only: bool = False,
    ):
        super().__init__()
        if isinstance(lm_or_config, BertForMaskedLM):
            self.lm = lm_or_config
        elif isinstance(lm_or_config, BertConfig):
            self.lm = BertForMaskedLM(lm_or_config)
        else:
            raise TypeError("expected BertForMaskedLM or BertConfig")
        cfg = self.lm.config
        if not (1 <= skip_from <= cfg.num_hidden_layers):
            raise ValueError(f"skip_from={skip_from} must be in [1, {cfg.num_hidden_layers}]")
        self.skip_from = int(skip_from)
        self.n_head_layers = int(n_head_layers)
        self.late_mlm = bool(late_mlm)
        self.mlm_masked_only = bool(mlm_masked_only)
        self.c_head = nn.ModuleList([BertLayer(cfg) for _ in range(self.n_head_layers)])
        self.init_head()

    @property
    def config(self) -> BertConfig:
        return self.lm.config

    @torch.no_grad()
    def init_head(self):
        """Backbone-style init (spec 2.2): Linear W ~ N(0, initializer_range), b = 0; LN g=1, b=0."""
        std = self.lm.config.initializer_range
        for mod in self.c_head.modules():
            if isinstance(mod, nn.Linear):
                nn.init.normal_(mod.weight, mean=0.0, std=std)
                if mod.bias is not None:
                    nn.init.zeros_(mod.bias)
            elif isinstance(mod, nn.LayerNorm):
                nn.init.ones_(mod.weight)
                nn.init.zeros_(mod.bias)

    def head_mask(self, x: torch.Tensor, attention_mask: torch.Tensor):
        if _hf_bidir_mask is not None:
            return _hf_bidir_mask(config=self.lm.config, inputs_embeds=x, attention_mask=attention_mask)
        return additive_padding_mask(attention_mask, x.dtype)

    def encode(self, input_ids, attention_mask, output_hidden_states: bool = False):
        """Backbone only (no MLM head). Returns the BaseModelOutput of lm.bert."""
        return self.lm.bert(
            input_ids=input_ids,
            attention_mask=attention_mask,
            output_hidden_states=output_hidden_states,
            return_dict=True,
        )

    def reps(self, input_ids, attention_mask) -> torch.Tensor:
        """Last-layer CLS (the span representation), backbone only. Consumes the same dropout RNG
        as the backbone part of forward()."""
        return self.encode(input_ids, attention_mask).last_hidden_state[:, 0]

    def forward(self, input_ids, attention_mask, labels):
        return self.mlm_forward(input_ids, attention_mask, labels)

    def mlm_forward(self, input_ids, attention_mask, labels):
        """Backbone + head MLM losses (no contrastive term); used by both models and gc_step."""
        out = self.encode(input_ids, attention_mask, output_hidden_states=True)
        hs = out.hidden_states
        last = hs[-1]
        late_loss = mlm_ce(self.lm, last, labels, self.mlm_masked_only)
        x = torch.cat([last[:, :1], hs[self.skip_from][:, 1:]], dim=1)
        mask = self.head_mask(x, attention_mask)
        for layer in self.c_head:
            x = _layer_out(layer(x, mask))
        head_loss = mlm_ce(self.lm, x, labels, self.mlm_masked_only)
        loss = head_loss + late_loss if self.late_mlm else head_loss
        return dict(loss=loss, head_loss=head_loss, late_loss=late_loss, reps=last[:, 0])


def contrastive_loss(reps: torch.Tensor) -> torch.Tensor:
    """coCondenser span loss (spec 2.4). reps: [N, H], rows ordered (d0s0, d0s1, d1s0, ...).

    S = reps @ reps.T (raw dot products, fp32), S_ii = -inf, target k -> k ^ 1, CE mean over N rows.
    """
    n = reps.size(0)
    if n % 2:
        raise ValueError("contrastive batch must hold an even number of spans (2 per document)")
    with torch.autocast(device_type=reps.device.type, enabled=False):
        r = reps.float() if reps.dtype in (torch.float16, torch.bfloat16) else reps
        s = r @ r.t()
        eye = torch.eye(n, dtype=torch.bool, device=reps.device)
        s = s.masked_fill(eye, float("-inf"))
        target = torch.arange(n, device=reps.device) ^ 1
        return F.cross_entropy(s, target)


class CoCondenserRef(CondenserRef):
    """coCondenser (spec 2.4), single process, no grad cache.

    forward -> dict(loss, head_loss, late_loss, co_loss, reps);
    loss = head_loss + late_loss (if late_mlm) + co_loss.
    """

    def forward(self, input_ids, attention_mask, labels):
        out = self.mlm_forward(input_ids, attention_mask, labels)
        co = contrastive_loss(out["reps"])
        out["co_loss"] = co
        out["loss"] = out["loss"] + co
        return out


# --------------------------------------------------------------------------------------------
# Gradient cache (spec 2.6), single process.


def _rng_snapshot(device: torch.device):
    cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    return torch.get_rng_state(), cuda


def _rng_restore(device: torch.device, snap):
    cpu, cuda = snap
    torch.set_rng_state(cpu)
    if cuda is not None:
        torch.cuda.set_rng_state(cuda, device)


def gc_step(
    model: CondenserRef,
    batch: dict,
    chunk: int,
    mlm_weight: float,
    amp_dtype: Optional[torch.dtype] = None,
    replay_rng: bool = True,
):
    """One gradient-cache step; accumulates into .grad (caller zero_grads before, steps after).

    batch: dict(input_ids, attention_mask, labels), 2B rows ordered (d0s0, d0s1, d1s0, ...).
    Objective whose gradient is produced:
        L = co(V) + sum_i  mlm_weight * rows_i / (2B) * mlm_i
    with V = last-layer CLS of all 2B rows and mlm_i = head_i + late_i (or head_i if not late_mlm)
    the MLM means over chunk i's labelled tokens.
      * mlm_weight = 2.0 reproduces luyug/Condenser's GC path (it scales mlm_i by rows_i / B,
        B = documents) — the weighting the released coCondenser checkpoints were trained with.
      * mlm_weight = 1.0 matches the non-GC loss head + late + co when every chunk holds the same
        number of labelled tokens per row (otherwise it is a mean of chunk means).
    Pass 1: per chunk, snapshot CPU (+CUDA) RNG state, no-grad backbone forward -> CLS reps.
    Cache:  co on detached reps (requires_grad) -> backward -> G = dco/dV.
    Pass 2: per chunk, restore that chunk's RNG snapshot inside torch.random.fork_rng (identical
            dropout masks), full forward (backbone + head), backward(scale_i * mlm_i + <G_i, V_i>).
    replay_rng=False skips the RNG restore (only for the negative-control test).
    Returns detached dict(loss, co_loss, mlm_loss, replay_max_abs_diff) (tensors, no host sync).
    """
    input_ids = batch["input_ids"]
    attention_mask = batch["attention_mask"]
    labels = batch["labels"]
    n = input_ids.size(0)
    if n % 2:
        raise ValueError("need 2 spans per document")
    device = input_ids.device
    dev_type = device.type
    use_amp = amp_dtype is not None
    bounds = [(s, min(s + chunk, n)) for s in range(0, n, chunk)]

    # Pass 1: representations without graph, RNG snapshot per chunk.
    snaps, reps1 = [], []
    with torch.no_grad():
        for s, e in bounds:
            snaps.append(_rng_snapshot(device))
            with torch.autocast(device_type=dev_type, dtype=amp_dtype, enabled=use_amp):
                reps1.append(model.reps(input_ids[s:e], attention_mask[s:e]))
    reps = torch.cat(reps1).detach().requires_grad_(True)

    # Gradient cache for the contrastive loss.
    co = contrastive_loss(reps)
    (g,) = torch.autograd.grad(co, reps)

    # Pass 2: replay each chunk with the same dropout RNG, backprop MLM + surrogate.
    mlm_total = torch.zeros((), device=device, dtype=reps.dtype)
    replay_diff = torch.zeros((), device=device, dtype=reps.dtype)
    fork_devices = [device] if dev_type == "cuda" else []
    for (s, e), snap in zip(bounds, snaps):
        with torch.random.fork_rng(devices=fork_devices, device_type="cuda"):
            if replay_rng:
                _rng_restore(device, snap)
            with torch.autocast(device_type=dev_type, dtype=amp_dtype, enabled=use_amp):
                out = model.mlm_forward(input_ids[s:e], attention_mask[s:e], labels[s:e])
        scale = mlm_weight * (e - s) / n
        surrogate = (g[s:e].to(out["reps"].dtype) * out["reps"]).sum()
        (out["loss"] * scale + surrogate).backward()
        mlm_total = mlm_total + out["loss"].detach().to(mlm_total.dtype) * scale
        diff = (out["reps"].detach() - reps[s:e].detach()).abs().max().to(replay_diff.dtype)
        replay_diff = torch.maximum(replay_diff, diff)
    co = co.detach()
    return dict(loss=co + mlm_total, co_loss=co, mlm_loss=mlm_total, replay_max_abs_diff=replay_diff)


# --------------------------------------------------------------------------------------------
# Save / load.


def head_state_dict(model: CondenserRef) -> dict:
    """`c_head.{i}.<BertLayer param name>` -> tensor (names mirror bert.encoder.layer.{i}.*)."""
    sd = {}
    for i, layer in enumerate(model.c_head):
        for k, v in layer.state_dict().items():
            sd[f"c_head.{i}.{k}"] = v
    return sd


def save_hf(model: CondenserRef, out_dir: str):
    """Backbone + MLM head via lm.save_pretrained (BertForMaskedLM layout, safetensors);
    head weights in condenser_head.safetensors; condenser args in its metadata."""
    from safetensors.torch import save_file

    os.makedirs(out_dir, exist_ok=True)
    model.lm.save_pretrained(out_dir, safe_serialization=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in head_state_dict(model).items()}
    meta = {
        "format": "pt",
        "skip_from": str(model.skip_from),
        "n_head_layers": str(model.n_head_layers),
        "late_mlm": json.dumps(model.late_mlm),
        "model": type(model).__name__,
    }
    save_file(tensors, os.path.join(out_dir, HEAD_FILE), metadata=meta)


def load_hf(in_dir: str, cls=None, mlm_masked_only: bool = False, **lm_kwargs) -> CondenserRef:
    """Inverse of save_hf. cls: CondenserRef / CoCondenserRef (default: class recorded in the
    metadata). Missing head file -> randomly initialised head (reference behaviour, with a warning)."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    lm = BertForMaskedLM.from_pretrained(in_dir, **lm_kwargs)
    head_path = os.path.join(in_dir, HEAD_FILE)
    args = dict(skip_from=6, n_head_layers=2, late_mlm=True)
    recorded = None
    if os.path.exists(head_path):
        with safe_open(head_path, framework="pt") as f:
            meta = f.metadata() or {}
        if "skip_from" in meta:
            args["skip_from"] = int(meta["skip_from"])
        if "n_head_layers" in meta:
            args["n_head_layers"] = int(meta["n_head_layers"])
        if "late_mlm" in meta:
            args["late_mlm"] = bool(json.loads(meta["late_mlm"]))
        recorded = meta.get("model")
    if cls is None:
        cls = CoCondenserRef if recorded == "CoCondenserRef" else CondenserRef
    model = cls(lm, mlm_masked_only=mlm_masked_only, **args)
    if os.path.exists(head_path):
        sd = load_file(head_path)
        expect = set(head_state_dict(model).keys())
        if set(sd.keys()) != expect:
            raise ValueError(f"head keys mismatch: missing={sorted(expect - set(sd))} extra={sorted(set(sd) - expect)}")
        for i, layer in enumerate(model.c_head):
            p = f"c_head.{i}."
            layer.load_state_dict({k[len(p):]: v for k, v in sd.items() if k.startswith(p)}, strict=True)
        model.to(dtype=next(lm.parameters()).dtype, device=next(lm.parameters()).device)
    else:
        import warnings

        warnings.warn(f"{head_path} missing: Condenser head randomly initialised")
    return model
