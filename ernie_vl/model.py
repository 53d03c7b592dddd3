"""ERNIE-4.5-VL-MoE for conditional generation: vision tower + resampler + MoE text decoder + tied LM head.

Mirrors transformers 5.23.0 `Ernie4_5_VLMoeForConditionalGeneration` (model-spec §8-9). Module and parameter names
equal the fused Hugging Face layout (`model.language_model.*`, `model.vision_tower.*`, `model.resampler_model.*`,
`lm_head.weight`), so a fused checkpoint loads by name and the original layout through `weights.py`.

The serving path takes what the processor made (`inputs.ModelBatch`: ids, mask, 3-D positions, pool and placeholder
indices, vision metadata) and reads nothing back from the device:
    encode(VisionBatch) -> features;  prefill(ModelBatch, cache) -> logits;  decode(tokens, positions, cache, ...)
`forward(input_ids, attention_mask, pixel_values, ...)` and `generate` keep transformers' shapes: they build the batch
metadata on the host (`ModelBatch.from_tensors`) and are the simple oracle that tests hold the engine against.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .attention import causal_padding_mask
from .config import ModelConfig
from .inputs import ModelBatch, VisionBatch, check_feature_rows
from .kv_cache import KVCache
from .resampler import Resampler
from .rope import text_cos_sin, text_inv_freq, vision_inv_freq
from .sampling import sample_next
from .text import TextModel
from .vision import VisionTower


@dataclass
class CausalLMOutput:
    logits: torch.Tensor  # [B, S or logits_to_keep, V]
    cache: KVCache | None = None


class _Backbone(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.language_model = TextModel(cfg.text)
        self.vision_tower = VisionTower(cfg.vision)
        self.resampler_model = Resampler(cfg)


class ErnieVLForConditionalGeneration(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.config = cfg
        self.model = _Backbone(cfg)
        self.lm_head = nn.Linear(cfg.text.hidden_size, cfg.text.vocab_size, bias=False)
        if cfg.tie_word_embeddings:
            self.lm_head.weight = self.model.language_model.embed_tokens.weight
        t = cfg.text
        self.register_buffer("inv_freq", text_inv_freq(t.head_dim, t.rope_theta, t.mrope_section), persistent=False)

    # ------------------------------------------------------------------ properties
    @property
    def dtype(self) -> torch.dtype:
        return self.lm_head.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.lm_head.weight.device

    def reset_buffers(self, device) -> None:
        """(Re)compute the non-persistent rotary buffers, e.g. after building on the meta device."""
        t, v = self.config.text, self.config.vision
        self.inv_freq = text_inv_freq(t.head_dim, t.rope_theta, t.mrope_section).to(device)
        self.model.vision_tower.inv_freq = vision_inv_freq(v.head_dim, v.rope_theta).to(device)

    def to_dtype(self, dtype: torch.dtype) -> "ErnieVLForConditionalGeneration":
        """Cast floating weights to `dtype`, keeping router weights and correction biases in float32."""
        from .weight_map import keep_float32

        for name, p in self.named_parameters():
            p.data = p.data.to(torch.float32 if keep_float32(name) else dtype)
        return self

    # ------------------------------------------------------------------ vision
    def encode(self, vision: VisionBatch) -> torch.Tensor:
        """Pixel rows of images or videos -> [n_tokens, D] features (h*w/4 per image, t*h*w/8 per video, in order)."""
        vision = vision.to(self.device, non_blocking=True)
        feats = self.model.vision_tower(vision.pixels, vision.patch_pos, vision.segments)
        return self.model.resampler_model(feats, vision.pair_first, vision.pair_second)

    # ------------------------------------------------------------------ prefill
    def prefill(
        self,
        batch: ModelBatch,
        cache: KVCache | None = None,
        logits_to_keep: int = 1,
        image_features: torch.Tensor | None = None,
        video_features: torch.Tensor | None = None,
        prefix_mask: torch.Tensor | None = None,
    ) -> CausalLMOutput:
        """Run a left-padded prompt batch; logits of the last `logits_to_keep` positions (0: all).
        `image_features` / `video_features`: encoded beforehand (else encoded here). A `cache` that already holds
        `cache.length` tokens in every row (a shared prompt prefix) is continued: the batch is then the rest of each
        prompt, its positions those of the full sequences; `prefix_mask` [B, cache.length] marks the cached positions
        each row attends to (default: all)."""
        B, S = batch.shape
        start = cache.length if cache is not None else 0
        dev = self.device
        b = batch.to(dev, non_blocking=True)
        if image_features is None and b.images is not None:
            image_features = self.encode(b.images)
        if video_features is None and b.videos is not None:
            video_features = self.encode(b.videos)
        h_BSD = self.model.language_model.embed_tokens(b.input_ids)
        h_TD = h_BSD.view(B * S, -1)
        for name, index, feats in (("image", b.image_index, image_features), ("video", b.video_index, video_features)):
            check_feature_rows(name, index.numel(), 0 if feats is None else feats.shape[0])
            if index.numel():
                h_TD = h_TD.index_copy(0, index, feats.to(h_TD.dtype))
        cos, sin = text_cos_sin(b.position_ids, self.inv_freq, self.config.text.mrope_section)
        keys_BL = b.attention_mask
        if start:
            before = (torch.ones(B, start, dtype=keys_BL.dtype, device=dev) if prefix_mask is None
                      else prefix_mask.to(dev, keys_BL.dtype))
            keys_BL = torch.cat([before, keys_BL], dim=1)
        # an unpadded batch from position 0 needs no mask: SDPA's causal path skips the masked half of the work
        unpadded = not start and S > 1 and bool(batch.lengths) and all(n == S for n in batch.lengths)
        mask = None if unpadded else causal_padding_mask(keys_BL, start, S)
        h = self.model.language_model(h_TD.view(B, S, -1), cos, sin, mask, cache, start,
                                      (b.text_index, b.vision_index))
        if cache is not None:
            cache.advance(S)
        if logits_to_keep:
            h = h[:, -logits_to_keep:]
        return CausalLMOutput(logits=self.lm_head(h), cache=cache)

    # ------------------------------------------------------------------ decode
    def decode(
        self, tokens_B: torch.Tensor, positions_3B1: torch.Tensor, cache: KVCache, write_at_B: torch.Tensor,
        keys_BL: torch.Tensor,
    ) -> torch.Tensor:
        """One decode step: row b's token is written to the cache at `write_at_B[b]` and attends to the first L
        cached positions where `keys_BL[b]` is True. Returns next-token logits [B, V]. Shapes are fixed for fixed
        B and L (what a CUDA graph captures). Decode tokens are text: they use the text experts."""
        cache.view_len = keys_BL.shape[1]
        h = self.model.language_model.embed_tokens(tokens_B[:, None].to(self.device))
        cos, sin = text_cos_sin(positions_3B1, self.inv_freq, self.config.text.mrope_section)
        h = self.model.language_model(h, cos, sin, keys_BL[:, None, None, :], cache, write_at_B, None)
        return self.lm_head(h[:, -1])

    # ------------------------------------------------------------------ transformers-shaped entry points
    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        image_grid_thw: torch.Tensor | None = None,
        pixel_values_videos: torch.Tensor | None = None,
        video_grid_thw: torch.Tensor | None = None,
    ) -> CausalLMOutput:
        """Logits [B, S, V] of a prompt batch given as transformers takes it (any padding side)."""
        batch = ModelBatch.from_tensors(input_ids, attention_mask, self, pixel_values, image_grid_thw,
                                        pixel_values_videos, video_grid_thw)
        return self.prefill(batch, logits_to_keep=0)

    def new_cache(self, batch: int, capacity: int) -> KVCache:
        t = self.config.text
        return KVCache(t.num_hidden_layers, batch, t.num_key_value_heads, capacity, t.head_dim, self.dtype, self.device)

    @torch.inference_mode()
    def generate(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        image_grid_thw: torch.Tensor | None = None,
        pixel_values_videos: torch.Tensor | None = None,
        video_grid_thw: torch.Tensor | None = None,
        max_new_tokens: int = 32,
        do_sample: bool = False,
        temperature: float = 1.0,
        top_p: float = 1.0,
        top_k: int = 0,
        eos_token_id: int | list[int] | None = None,
        pad_token_id: int | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """[B, S + n] ids like transformers' `generate`: prompt then new tokens; rows that hit EOS are filled with
        `pad_token_id` (default: the first EOS id) until every row is done or `max_new_tokens` is reached.

        The simple oracle (one padded batch, every row decoded until all are done) that the engine and the server
        are tested against; `ernie-vl generate` uses it too. Serving goes through `engine` / `slots`."""
        if max_new_tokens < 0:
            raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
        batch = ModelBatch.from_tensors(input_ids, attention_mask, self, pixel_values, image_grid_thw,
                                        pixel_values_videos, video_grid_thw)
        B, S = batch.shape
        dev = self.device
        eos = [] if eos_token_id is None else ([eos_token_id] if isinstance(eos_token_id, int) else list(eos_token_id))
        eos_t = torch.tensor(eos, device=dev, dtype=torch.long)
        pad = pad_token_id if pad_token_id is not None else (eos[0] if eos else 0)

        cache = self.new_cache(B, S + max_new_tokens)
        logits = self.prefill(batch, cache, logits_to_keep=1).logits[:, -1]
        pos_3B1 = batch.next_positions.to(dev)[:, :, None]
        keys = batch.attention_mask.to(dev).bool()
        tokens, done = [], torch.zeros(B, dtype=torch.bool, device=dev)
        for step in range(max_new_tokens):
            nxt = sample_next(logits, do_sample, temperature, top_k, top_p, generator)
            nxt = torch.where(done, torch.full_like(nxt, pad), nxt)
            tokens.append(nxt)
            if eos:
                done |= torch.isin(nxt, eos_t)
                if bool(done.all()):
                    break
            if step == max_new_tokens - 1:
                break
            keys = torch.cat([keys, torch.ones(B, 1, dtype=torch.bool, device=dev)], dim=1)
            write_at = torch.full((B,), S + step, dtype=torch.long, device=dev)
            logits = self.decode(nxt, pos_3B1 + step, cache, write_at, keys)
        if not tokens:
            return batch.input_ids.to(dev)
        return torch.cat([batch.input_ids.to(dev), torch.stack(tokens, dim=1)], dim=1)
