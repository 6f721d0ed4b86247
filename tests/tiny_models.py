"""The tiny randomly initialised Hugging Face models the tests run real code on, built in one place."""

from __future__ import annotations

D, D_INT, N_LAYERS, VOCAB, HEADS, KV_HEADS = 64, 160, 2, 300, 4, 2

FAMILIES = {
    "llama": ("LlamaConfig", {}),
    "mistral": ("MistralConfig", {}),
    "phi3": ("Phi3Config", {"pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2}),
    "qwen2": ("Qwen2Config", {}),
    "gemma": ("GemmaConfig", {"head_dim": D // HEADS, "pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2}),
}


def tiny_model(family: str = "llama", random_norms: bool = True, seed: int = 0):
    """A randomly initialised 2-layer causal LM of ``family`` (d 64, d_int 160, vocab 300), in eval mode.
    ``random_norms``: norm weights drawn from [0.5, 1.5] instead of 1 (Gemma: 0, meaning 1), so that a
    missing norm would show."""
    import torch
    import transformers

    cls_name, kw = FAMILIES[family]
    cfg = getattr(transformers, cls_name)(
        vocab_size=VOCAB,
        hidden_size=D,
        intermediate_size=D_INT,
        num_hidden_layers=N_LAYERS,
        num_attention_heads=HEADS,
        num_key_value_heads=KV_HEADS,
        max_position_embeddings=128,
        initializer_range=0.2,
        **kw,
    )
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(cfg).eval()
    if random_norms:
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "norm" in name:
                    p.uniform_(0.5, 1.5)
    return model
