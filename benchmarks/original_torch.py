"""The original PyTorch system, re-created from docs/original.md for speed comparisons.

Benchmark-only (torch is not a dependency of the project). Module and parameter
names follow the original's state-dict layout (docs/original.md §3, §4), so the
original's own checkpoints load with ``strict=True``; ``run.py`` checks that
this re-creation reproduces the fixture outputs of the original before timing it.

Contents:
- ``SetCompletionModel``: MAB / SAB / ISAB / PMA with ``nn.MultiheadAttention``,
  set-transformer layers, masked-mean pooling, linear head.
- ``SparseAutoencoder``: decoder-bias subtraction, encoder, clamped ReLU, decoder
  normalised under no-grad at use time, the loss with its no-grad usage EMA.
- ``SAETrainer``: one training step exactly as the original runs it (backward,
  parallel decoder-gradient removal, grad-norm clip, AdamW, column renormalisation,
  cosine LR), the batch drawn by ``randperm`` over the buffer contents and a second
  SAE forward per step to log L0.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

# ---------------------------------------------------------------- primary model


class MAB(nn.Module):
    """``x = LN1(q + MHA(q, k, k)); x = LN2(x + FF(x))`` on ``(b, n, d)`` tensors."""

    def __init__(self, dim: int, num_heads: int, use_layer_norm: bool, dropout: float):
        super().__init__()
        self.mha = nn.MultiheadAttention(dim, num_heads, dropout=dropout, batch_first=True)
        self.feedforward = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(),
                                         nn.Linear(4 * dim, dim))
        self.dropout = nn.Dropout(dropout)
        self.use_layer_norm = use_layer_norm
        if use_layer_norm:
            self.layer_norm1 = nn.LayerNorm(dim, eps=1e-5)
            self.layer_norm2 = nn.LayerNorm(dim, eps=1e-5)

    def forward(self, q, k, key_padding_mask=None):
        a, _ = self.mha(q, k, k, key_padding_mask=key_padding_mask)
        x = q + self.dropout(a)
        if self.use_layer_norm:
            x = self.layer_norm1(x)
        x = x + self.dropout(self.feedforward(x))
        if self.use_layer_norm:
            x = self.layer_norm2(x)
        return x


class SAB(nn.Module):
    def __init__(self, dim, num_heads, use_layer_norm, dropout):
        super().__init__()
        self.mab = MAB(dim, num_heads, use_layer_norm, dropout)

    def forward(self, x, key_padding_mask=None):
        return self.mab(x, x, key_padding_mask)


class ISAB(nn.Module):
    """``h = MAB1(I, x, mask); out = LN(MAB2(x, h) + x)`` (the LN is unconditional)."""

    def __init__(self, dim, num_heads, m, use_layer_norm, dropout):
        super().__init__()
        self.inducing_points = nn.Parameter(torch.empty(m, dim))
        nn.init.xavier_uniform_(self.inducing_points)
        self.mab1 = MAB(dim, num_heads, use_layer_norm, dropout)
        self.mab2 = MAB(dim, num_heads, use_layer_norm, dropout)
        self.layer_norm = nn.LayerNorm(dim, eps=1e-5)

    def forward(self, x, key_padding_mask=None):
        points = self.inducing_points.unsqueeze(0).expand(x.shape[0], -1, -1)
        h = self.mab1(points, x, key_padding_mask)
        return self.layer_norm(self.mab2(x, h) + x)


class PMA(nn.Module):
    def __init__(self, dim, num_heads, m, use_layer_norm, dropout):
        super().__init__()
        self.seed_vectors = nn.Parameter(torch.empty(m, dim))
        nn.init.xavier_uniform_(self.seed_vectors)
        self.mab = MAB(dim, num_heads, use_layer_norm, dropout)
        self.out_proj = nn.Linear(dim, dim)

    def forward(self, x, key_padding_mask=None):
        seeds = self.seed_vectors.unsqueeze(0).expand(x.shape[0], -1, -1)
        return self.out_proj(self.mab(seeds, x, key_padding_mask))


class SetTransformer(nn.Module):
    def __init__(self, dim, num_heads, m, use_layer_norm, dropout):
        super().__init__()
        self.enc_layer1 = ISAB(dim, num_heads, m, use_layer_norm, dropout)
        self.enc_layer2 = ISAB(dim, num_heads, m, use_layer_norm, dropout)
        self.dec_layer1 = PMA(dim, num_heads, m, use_layer_norm, dropout)
        self.dec_layer2 = SAB(dim, num_heads, use_layer_norm, dropout)
        self.dec_layer3 = SAB(dim, num_heads, use_layer_norm, dropout)

    def forward(self, x, key_padding_mask=None):
        x = self.enc_layer1(x, key_padding_mask) + x
        x = self.enc_layer2(x, key_padding_mask) + x
        y = self.dec_layer1(x, key_padding_mask)
        y = self.dec_layer2(y) + y
        return self.dec_layer3(y) + y


class SetTransformerLayer(nn.Module):
    def __init__(self, dim, num_heads, m, use_layer_norm, dropout):
        super().__init__()
        self.set_transformer = SetTransformer(dim, num_heads, m, use_layer_norm, dropout)
        self.cross_attention = MAB(dim, num_heads, use_layer_norm, dropout)
        self.feedforward = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(),
                                         nn.Linear(4 * dim, dim))
        self.dropout = nn.Dropout(dropout)
        self.use_layer_norm = use_layer_norm
        if use_layer_norm:
            self.layer_norm1 = nn.LayerNorm(dim, eps=1e-5)
            self.layer_norm2 = nn.LayerNorm(dim, eps=1e-5)

    def forward(self, x, key_padding_mask=None):
        s = self.set_transformer(x, key_padding_mask)
        x = x + self.dropout(self.cross_attention(x, s))
        if self.use_layer_norm:
            x = self.layer_norm1(x)
        x = x + self.dropout(self.feedforward(x))
        if self.use_layer_norm:
            x = self.layer_norm2(x)
        return x


class SetCompletionModel(nn.Module):
    """Constructor arguments are the original's ``model_params.json`` names.

    ``forward(tokens (b, n) long, weapons (b, 1) long, key_padding_mask (b, n) bool)``
    -> logits ``(b, output_dim)``; :meth:`pooled` gives the SAE's input ``(b, hidden_dim)``.
    """

    def __init__(self, vocab_size, weapon_vocab_size, embedding_dim, hidden_dim, output_dim,
                 num_layers, num_heads, num_inducing_points, use_layer_norm=True, dropout=0.0,
                 pad_token_id=None):
        super().__init__()
        pad = vocab_size - 1 if pad_token_id is None else pad_token_id
        self.ability_embedding = nn.Embedding(vocab_size, embedding_dim, padding_idx=pad)
        self.weapon_embedding = nn.Embedding(weapon_vocab_size, embedding_dim)
        self.input_proj = (nn.Linear(embedding_dim, hidden_dim)
                           if embedding_dim != hidden_dim else nn.Identity())
        self.transformer_layers = nn.ModuleList([
            SetTransformerLayer(hidden_dim, num_heads, num_inducing_points, use_layer_norm,
                                dropout)
            for _ in range(num_layers)
        ])
        self.output_layer = nn.Linear(hidden_dim, output_dim)

    def pooled(self, tokens, weapons, key_padding_mask):
        x = self.ability_embedding(tokens) + self.weapon_embedding(weapons)
        x = self.input_proj(x)
        for layer in self.transformer_layers:
            x = layer(x, key_padding_mask)
        valid = (~key_padding_mask).unsqueeze(-1).to(x.dtype)
        return (x * valid).sum(dim=1) / valid.sum(dim=1).clamp(min=1.0)

    def forward(self, tokens, weapons, key_padding_mask):
        return self.output_layer(self.pooled(tokens, weapons, key_padding_mask))


# ---------------------------------------------------------------- sparse autoencoder


class SparseAutoencoder(nn.Module):
    """``forward(x (b, d)) -> (recon (b, d), h (b, hidden))``; the decoder weight
    ``(d, hidden)`` is column-normalised under no-grad, so it never receives a gradient."""

    def __init__(self, input_dim: int, expansion_factor: float = 4.0, clip_max: float = 6.0,
                 target_usage: float = 0.05, usage_ema_decay: float = 0.99):
        super().__init__()
        hidden = int(input_dim * expansion_factor)
        self.clip_max = clip_max
        self.target_usage = target_usage
        self.usage_ema_decay = usage_ema_decay
        self.decoder_bias = nn.Parameter(torch.zeros(input_dim))
        self.encoder = nn.Linear(input_dim, hidden)
        self.decoder = nn.Linear(hidden, input_dim)
        self.register_buffer("usage_ema", torch.zeros(hidden))
        nn.init.kaiming_uniform_(self.encoder.weight, mode="fan_in", nonlinearity="relu")
        nn.init.kaiming_uniform_(self.decoder.weight, mode="fan_in", nonlinearity="relu")
        nn.init.zeros_(self.encoder.bias)
        nn.init.zeros_(self.decoder.bias)
        with torch.no_grad():
            self.decoder.weight.copy_(F.normalize(self.decoder.weight, dim=0))

    def encode(self, x):
        pre = self.encoder(x - self.decoder_bias)
        return pre, torch.clamp(F.relu(pre), 0.0, self.clip_max)

    def forward(self, x):
        _, h = self.encode(x)
        with torch.no_grad():
            atoms = F.normalize(self.decoder.weight, dim=0)
        return F.linear(h, atoms) + self.decoder_bias, h

    def loss(self, x, recon, h, l1_coeff: float, usage_coeff: float):
        """``mse + l1_coeff * l1 + usage_coeff * kl``; the usage EMA is updated in place."""
        mse = F.mse_loss(recon, x)
        l1 = h.abs().sum(dim=1).mean()
        with torch.no_grad():
            usage_batch = (h > 0).float().mean(dim=0)
            self.usage_ema.mul_(self.usage_ema_decay).add_((1 - self.usage_ema_decay)
                                                           * usage_batch)
        p = self.usage_ema.clamp(1e-7, 1 - 1e-7)
        rho = self.target_usage
        kl = (rho * torch.log(rho / p) + (1 - rho) * torch.log((1 - rho) / (1 - p))).mean()
        return mse + l1_coeff * l1 + usage_coeff * kl, mse, l1, kl


def usage_coeff_at(step: int, base: float, floor: float = 0.05, warmup: int = 6000,
                   period: int = 60000) -> float:
    if step < warmup:
        return floor + (base - floor) * step / warmup
    phase = (step - warmup) % period
    return floor + (base - floor) * 0.5 * (1 + math.cos(2 * math.pi * phase / period))


def l1_coeff_at(step: int, target: float, start: float = 0.0, warmup: int = 6000) -> float:
    if step < warmup:
        return start + (target - start) * step / warmup
    return target


class SAETrainer:
    """The original's per-step SAE loop on a float32 buffer tensor ``(fill, d)``."""

    def __init__(self, sae: SparseAutoencoder, *, lr=1e-5, weight_decay=0.01, grad_clip=1.0,
                 l1_coeff=5e-6, usage_coeff=1.5, batch_size=1024, total_steps=100_000):
        self.sae = sae
        self.batch_size = batch_size
        self.grad_clip = grad_clip
        self.l1_coeff = l1_coeff
        self.usage_coeff = usage_coeff
        self.optimizer = torch.optim.AdamW(sae.parameters(), lr=lr, weight_decay=weight_decay)
        self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
            self.optimizer, T_max=total_steps, eta_min=0.1 * lr)
        self.step_count = 0

    def _remove_parallel_decoder_grad(self):
        # Only the component orthogonal to each unit column may change it; with the
        # original's no-grad decoder there is no gradient and this does nothing.
        w, g = self.sae.decoder.weight, self.sae.decoder.weight.grad
        if g is None:
            return
        atoms = F.normalize(w.data, dim=0)
        g.sub_((g * atoms).sum(dim=0, keepdim=True) * atoms)

    def step(self, buffer: torch.Tensor) -> dict:
        """One SAE step: shuffled batch, forward, loss, backward, update, L0 re-forward."""
        idx = torch.randperm(buffer.shape[0])[: self.batch_size]
        x = buffer[idx]
        s = self.step_count
        l1c = l1_coeff_at(s, self.l1_coeff)
        uc = usage_coeff_at(s, self.usage_coeff)
        self.optimizer.zero_grad()
        recon, h = self.sae(x)
        total, mse, l1, kl = self.sae.loss(x, recon, h, l1c, uc)
        total.backward()
        self._remove_parallel_decoder_grad()
        torch.nn.utils.clip_grad_norm_(self.sae.parameters(), self.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        with torch.no_grad():
            w = self.sae.decoder.weight
            w.copy_(F.normalize(w, dim=0))
            # The original's second forward, only to log L0.
            _, h_log = self.sae(x)
            l0 = (h_log > 0).float().sum(dim=1).mean()
        self.step_count += 1
        return {"loss": total.item(), "mse": mse.item(), "l1": l1.item(), "kl": kl.item(),
                "l0": l0.item()}
