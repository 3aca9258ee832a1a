"""Helpers and fixtures shared by the test files.

Test files import the helpers (``from conftest import run_cli``: pytest puts ``tests/`` on
``sys.path`` and registers this module as ``conftest``) and request the fixtures by name.
"""

import json
import os
import random
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from amaranth.hdl import Value

ROOT = Path(__file__).resolve().parent.parent

# Warnings are errors in the command and its cocotb child, as in the suite, but for cocotb's
# own FutureWarning about +seed (the harness seeds through plusargs, not COCOTB_RANDOM_SEED).
CLI_ENV = os.environ | {
    "PYTHONWARNINGS": "error,ignore:Passing +seed will not be used:FutureWarning"}


def run_cli(*args, cwd=ROOT, env=CLI_ENV):
    """``python -m sparsecim.tb.cli ARGS`` as a user runs it (arguments through ``str``), with
    warnings as errors: the finished process, output captured as text."""
    return subprocess.run([sys.executable, "-m", "sparsecim.tb.cli", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, env=env, timeout=600)


def int8(shape, seed):
    """Uniform INT8 values over the whole range, as ``np.int8``."""
    return np.random.default_rng(seed).integers(-128, 128, shape).astype(np.int8)


@pytest.fixture
def cli_main(capsys):
    """The CLI in this process (fast enough for fuzzing): ``cli_main(*args)`` returns status,
    stdout, stderr. An exception escaping ``main`` (a traceback for the user) fails the test by
    itself."""
    from sparsecim.tb.cli import main

    def call(*args):
        try:
            status = main([str(a) for a in args])
        except SystemExit as exc:  # argparse's own exit, after its one line
            status = exc.code
        out, err = capsys.readouterr()
        return status, out, err

    return call


# A tiny llama checkpoint written by hand (GQA, SwiGLU, RoPE), shared by the model-loader tests
# (Hugging Face folders, GGUF) and the `run --model` tests.
HIDDEN, FFN, HEADS, KV_HEADS, BLOCKS, VOCAB = 32, 48, 4, 2, 2, 50
HEAD_DIM = HIDDEN // HEADS
THETA, EPS = 10000.0, 1e-6


def _bf16(array: np.ndarray) -> np.ndarray:
    """``array`` truncated to bfloat16 precision, still float32 (so bf16 holds it exactly)."""
    bits = np.asarray(array, dtype=np.float32).view(np.uint32) & np.uint32(0xFFFF0000)
    return bits.view(np.float32)


def write_safetensors(path, tensors: dict, dtype: str = "BF16") -> None:
    """A safetensors file written from the format's definition: an 8-byte little-endian header
    length, the JSON header, then the raw little-endian data (bf16: the top 16 bits of the
    float32)."""
    header, blobs, offset = {}, [], 0
    for name, array in tensors.items():
        array = np.asarray(array, dtype=np.float32)
        if dtype == "BF16":
            data = (array.view(np.uint32) >> 16).astype("<u2").tobytes()
        elif dtype == "F16":
            data = array.astype("<f2").tobytes()
        else:
            data = array.astype("<f4").tobytes()
        header[name] = {"dtype": dtype, "shape": list(array.shape),
                        "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(struct.pack("<Q", len(text)) + text + b"".join(blobs))


def llama_tensors(seed: int = 0, biases: bool = False) -> dict:
    rng = np.random.default_rng(seed)

    def w(*shape, scale=0.2):
        return _bf16(rng.normal(0.0, scale, shape))

    t = {"model.embed_tokens.weight": w(VOCAB, HIDDEN, scale=1.0),
         "model.norm.weight": _bf16(1 + rng.normal(0, 0.1, HIDDEN)),
         "lm_head.weight": w(VOCAB, HIDDEN)}
    for i in range(BLOCKS):
        p = f"model.layers.{i}."
        t[p + "input_layernorm.weight"] = _bf16(1 + rng.normal(0, 0.1, HIDDEN))
        t[p + "post_attention_layernorm.weight"] = _bf16(1 + rng.normal(0, 0.1, HIDDEN))
        t[p + "self_attn.q_proj.weight"] = w(HEADS * HEAD_DIM, HIDDEN)
        t[p + "self_attn.k_proj.weight"] = w(KV_HEADS * HEAD_DIM, HIDDEN)
        t[p + "self_attn.v_proj.weight"] = w(KV_HEADS * HEAD_DIM, HIDDEN)
        t[p + "self_attn.o_proj.weight"] = w(HIDDEN, HEADS * HEAD_DIM)
        t[p + "mlp.gate_proj.weight"] = w(FFN, HIDDEN)
        t[p + "mlp.up_proj.weight"] = w(FFN, HIDDEN)
        t[p + "mlp.down_proj.weight"] = w(HIDDEN, FFN)
        if biases:
            for n, rows in (("q", HEADS), ("k", KV_HEADS), ("v", KV_HEADS)):
                t[p + f"self_attn.{n}_proj.bias"] = w(rows * HEAD_DIM)
    return t


def llama_config(model_type: str = "llama") -> dict:
    return {"model_type": model_type, "hidden_size": HIDDEN, "intermediate_size": FFN,
            "num_hidden_layers": BLOCKS, "num_attention_heads": HEADS,
            "num_key_value_heads": KV_HEADS, "vocab_size": VOCAB, "rms_norm_eps": EPS,
            "rope_theta": THETA, "max_position_embeddings": 64, "tie_word_embeddings": False}


def write_sharded(folder, tensors: dict, config: dict) -> None:
    """Two bf16 shards and ``model.safetensors.index.json``, as ``save_pretrained`` splits."""
    folder.mkdir(parents=True, exist_ok=True)
    names = list(tensors)
    shards = {"model-00001-of-00002.safetensors": names[:len(names) // 2],
              "model-00002-of-00002.safetensors": names[len(names) // 2:]}
    weight_map = {}
    for file, part in shards.items():
        write_safetensors(folder / file, {n: tensors[n] for n in part})
        weight_map.update({n: file for n in part})
    (folder / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {}, "weight_map": weight_map}))
    (folder / "config.json").write_text(json.dumps(config))


def reference_logits(t: dict, ids: np.ndarray) -> np.ndarray:
    """Llama forward in float64, one head at a time; RoPE rotates (j, j + d/2) as a complex
    number ``x_j + i·x_{j+d/2}`` by ``position · theta^(-2j/d)``."""
    t = {k: v.astype(np.float64) for k, v in t.items()}

    def rms(x, g):
        return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + EPS) * g

    def rope(x):  # (seq, d)
        half = HEAD_DIM // 2
        z = x[:, :half] + 1j * x[:, half:]
        angle = np.arange(len(x))[:, None] * THETA ** (-2 * np.arange(half) / HEAD_DIM)
        z = z * np.exp(1j * angle)
        return np.concatenate([z.real, z.imag], axis=1)

    def bias(name):
        return t.get(name, 0.0)

    x = t["model.embed_tokens.weight"][ids]
    seq = len(ids)
    for i in range(BLOCKS):
        p = f"model.layers.{i}."
        h = rms(x, t[p + "input_layernorm.weight"])
        q = h @ t[p + "self_attn.q_proj.weight"].T + bias(p + "self_attn.q_proj.bias")
        k = h @ t[p + "self_attn.k_proj.weight"].T + bias(p + "self_attn.k_proj.bias")
        v = h @ t[p + "self_attn.v_proj.weight"].T + bias(p + "self_attn.v_proj.bias")
        heads = []
        for head in range(HEADS):
            kv = head // (HEADS // KV_HEADS)
            qh = rope(q[:, head * HEAD_DIM:(head + 1) * HEAD_DIM])
            kh = rope(k[:, kv * HEAD_DIM:(kv + 1) * HEAD_DIM])
            vh = v[:, kv * HEAD_DIM:(kv + 1) * HEAD_DIM]
            scores = qh @ kh.T / np.sqrt(HEAD_DIM)
            scores[np.triu_indices(seq, 1)] = -np.inf
            probs = np.exp(scores - scores.max(axis=1, keepdims=True))
            heads.append(probs / probs.sum(axis=1, keepdims=True) @ vh)
        x = x + np.concatenate(heads, axis=1) @ t[p + "self_attn.o_proj.weight"].T
        h = rms(x, t[p + "post_attention_layernorm.weight"])
        gate = h @ t[p + "mlp.gate_proj.weight"].T
        x = x + (gate / (1 + np.exp(-gate)) * (h @ t[p + "mlp.up_proj.weight"].T)) \
            @ t[p + "mlp.down_proj.weight"].T
    return rms(x, t["model.norm.weight"]) @ t["lm_head.weight"].T


def pauser(seed, probability):
    """Returns a function telling whether a stream idles this cycle (never if seed is None)."""
    if seed is None:
        return lambda: False
    rng = random.Random(seed)
    return lambda: rng.random() < probability


def result_collector(port, pause, got: list):
    """An Amaranth testbench taking ``port``'s beats into ``got``, with ``ready`` low when
    ``pause()``; it also checks the stream rule: once ``valid`` is high it stays high with a
    stable payload until ``ready``."""
    async def collect(ctx):
        held = None  # (payload) offered without ready at the previous edge
        while True:
            ready = not pause()
            ctx.set(port.ready, ready)
            _, _, valid, payload = await ctx.tick().sample(port.valid, port.payload.as_value())
            if held is not None:
                assert valid and payload == held, "result changed before it was taken"
            if valid and ready:
                got.append(payload)
            held = payload if valid and not ready else None
    return collect


def stream_feeder(port, words, pause, taken: list | None = None):
    """An Amaranth testbench playing ``words`` into stream ``port``, with ``valid`` low in the
    cycles ``pause()`` says; appends the cycle of each handshake to ``taken`` when given."""
    async def feed(ctx):
        cycle = 0
        for word in words:
            while pause():
                ctx.set(port.valid, 0)
                await ctx.tick()
                cycle += 1
            ctx.set(Value.cast(port.payload), word)
            ctx.set(port.valid, 1)
            # A plain loop, not tick().until(): a background testbench may be left suspended
            # here when the design halts, and until() does not close cleanly.
            while True:
                _, _, ready = await ctx.tick().sample(port.ready)
                cycle += 1
                if ready:
                    break
            if taken is not None:
                taken.append(cycle - 1)
        ctx.set(port.valid, 0)
    return feed


async def wait_done(ctx, done, max_cycles: int) -> int:
    """Tick until ``done`` is high (at most ``max_cycles`` ticks); the number of ticks."""
    cycles = 0
    while not ctx.get(done):
        assert cycles < max_cycles, f"no done after {max_cycles} cycles"
        await ctx.tick()
        cycles += 1
    return cycles


def chip_layers(cfg, shapes, tokens: int, seed: int = 0):
    """``(layers, xs, ws)`` for the chip scheduler: a ``ChipLayer`` ``l<index>`` and random
    operands (``random_gemm`` on macro ``cfg``, seed ``seed + index``) for each
    ``(k, n, pattern)`` of ``shapes``."""
    from sparsecim.sw.operands import random_gemm
    from sparsecim.sw.schedule.chip import ChipLayer

    layers, xs, ws = [], [], []
    for index, (k, n, pattern) in enumerate(shapes):
        x, w = random_gemm(cfg, k, n, tokens, seed + index, pattern)
        layers.append(ChipLayer(f"l{index}", k, n, pattern))
        xs.append(x)
        ws.append(w)
    return layers, xs, ws
