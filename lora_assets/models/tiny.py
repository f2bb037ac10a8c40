"""Tiny, randomly initialised models of the real classes, saved exactly as real ones are.

No model hub is reachable from the build machines; tests and the offline demo build these and
load them through the same `from_pretrained` code as the real models. Their outputs are noise:
captions are random real words and a LoRA trained on them is not useful.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

BERT_VOCAB = "bert-base-uncased-vocab.txt"


def blip_processor() -> Any:
    """BLIP-large's processor, built offline: 384 px images, bert-base-uncased + [DEC]/[ENC]."""
    from transformers import BertTokenizer, BlipImageProcessor, BlipProcessor

    vocab = resources.files("lora_assets.models") / "assets" / BERT_VOCAB
    with resources.as_file(vocab) as vocab_path:
        tokenizer = BertTokenizer(str(vocab_path), do_lower_case=True, model_max_length=512)
    tokenizer.add_special_tokens({"bos_token": "[DEC]", "additional_special_tokens": ["[ENC]"]})
    return BlipProcessor(
        BlipImageProcessor(size={"height": 384, "width": 384}, do_convert_rgb=True), tokenizer
    )


def build_tiny_blip(folder: Path, seed: int = 0) -> Path:
    """A BLIP captioner (BlipForConditionalGeneration + BlipProcessor) with tiny widths but the
    real image size (384), patch size (16) and BLIP-large's tokenizer; saved to `folder`."""
    import torch
    from transformers import BlipConfig, BlipForConditionalGeneration

    folder.mkdir(parents=True, exist_ok=True)
    processor = blip_processor()
    tokenizer = processor.tokenizer
    config = BlipConfig(
        vision_config={
            "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
            "num_attention_heads": 2, "image_size": 384, "patch_size": 16,
        },
        text_config={
            "vocab_size": len(tokenizer), "hidden_size": 32, "intermediate_size": 64,
            "num_hidden_layers": 2, "num_attention_heads": 2, "max_position_embeddings": 512,
            "encoder_hidden_size": 32,
        },
    )  # fmt: skip
    torch.manual_seed(seed)
    model = BlipForConditionalGeneration(config).eval()
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder
