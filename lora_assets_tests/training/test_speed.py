"""The accelerator decisions, for the devices this machine does not have."""

from lora_assets.training.speed import (
    REGIONAL_MIN_STEPS,
    CompilePlan,
    compile_plan,
    compiled,
    optimizer_for,
    precision_for,
)


def test_auto_compiles_the_repeated_blocks_only_when_the_run_earns_it_back_and_never_on_a_cpu():
    assert compile_plan("auto", "reduce-overhead", "cuda", REGIONAL_MIN_STEPS - 1) is None
    assert compile_plan("auto", "reduce-overhead", "cuda", REGIONAL_MIN_STEPS) == CompilePlan(
        "regional", "reduce-overhead"
    )
    assert compile_plan(True, "default", "cuda", 10) == CompilePlan("full", "default")
    assert compile_plan("regional", "default", "cuda", 10) == CompilePlan("regional", "default")
    assert compile_plan(False, "default", "cuda", 10**6) is None
    assert all(compile_plan(s, "default", "cpu", 10**6) is None for s in (True, "auto", "regional"))
    assert (
        CompilePlan("regional", "reduce-overhead").cuda_graphs
        and not CompilePlan("full", "default").cuda_graphs
    )


def test_auto_precision_is_bf16_where_the_card_has_it_and_a_cpu_trains_in_fp32():
    assert precision_for("auto", "cuda", bf16_supported=True) == "bf16"
    assert precision_for("auto", "cuda", bf16_supported=False) == "fp16"
    assert precision_for("fp16", "cuda", bf16_supported=True) == "fp16"
    assert precision_for("bf16", "cpu") == precision_for("auto", "cpu") == "no"
    assert optimizer_for("AdamW8bit", "cuda") == "AdamW8bit" and optimizer_for("AdamW8bit", "cpu") == "AdamW"


def test_regional_compilation_compiles_the_real_unets_transformer_blocks_and_keeps_its_output(tmp_path):
    """On the CPU (inductor, mode "default") with SD 1.5's topology at tiny widths: the blocks the
    plan names exist in diffusers' UNet, get compiled in place, and compute what eager did."""
    import torch
    from diffusers import UNet2DConditionModel

    from lora_assets.models.tiny import build_tiny_sd

    torch.set_num_threads(1)
    unet = UNet2DConditionModel.from_pretrained(build_tiny_sd(tmp_path / "sd"), subfolder="unet").eval()
    latents = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    text = torch.randn(1, 77, unet.config.cross_attention_dim, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        eager = unet(latents, 10, text).sample
        step = compiled(unet, CompilePlan("regional", "default"))
        assert step is unet
        blocks = [m for m in unet.modules() if type(m).__name__ == "BasicTransformerBlock"]
        assert blocks and all(b._compiled_call_impl is not None for b in blocks)
        torch.testing.assert_close(step(latents, 10, text).sample, eager, rtol=1e-4, atol=1e-4)
