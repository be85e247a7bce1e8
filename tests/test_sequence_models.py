"""LRA ListOps sequence models: the three attentions against dense references, and the encoder end to end."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from dtn_bench.errors import DTNBenchError
from dtn_bench.norms import DTN
from dtn_bench.sequence import (
    ATTENTIONS,
    BigBirdAttention,
    FullAttention,
    LRAEncoder,
    LSHAttention,
    build_attention,
    count_parameters,
)

DIM = 32


def _mask(B: int, T: int, seed: int = 0) -> torch.Tensor:
    """Example 0: a few interior holes; example 1: trailing padding (the last quarter)."""
    g = torch.Generator().manual_seed(seed)
    m = torch.ones(B, T, dtype=torch.bool)
    m[0, torch.randperm(T, generator=g)[: T // 8]] = False
    m[1, T - T // 4 :] = False
    return m


def _heads(x: torch.Tensor, w: torch.Tensor, H: int) -> torch.Tensor:
    B, T, C = x.shape
    return (x @ w.T).view(B, T, H, C // H).transpose(1, 2)


def _merge(o: torch.Tensor) -> torch.Tensor:
    B, H, T, d = o.shape
    return o.transpose(1, 2).reshape(B, T, H * d)


def _dense(mod, x: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    """Textbook softmax attention with the module's q/k/v/o weights; ``allowed`` broadcasts to [B, H, T, T]."""
    H = mod.heads
    q, k, v = (_heads(x, p.weight, H) for p in (mod.q, mod.k, mod.v))
    logits = (q @ k.transpose(-1, -2)) / math.sqrt(q.shape[-1])
    att = logits.masked_fill(~allowed, float("-inf")).softmax(-1)
    return _merge(att @ v) @ mod.o.weight.T


# ------------------------------------------------------------------------------------------------------------------
# full attention
@pytest.mark.parametrize("heads", [1, 2, 4])
def test_full_attention_matches_dense_with_key_padding(heads):
    torch.manual_seed(0)
    mod = FullAttention(DIM, heads).double()
    x = torch.randn(2, 23, DIM, dtype=torch.float64)
    mask = _mask(2, 23)
    ref = _dense(mod, x, mask[:, None, None, :])
    out = mod(x, mask)
    torch.testing.assert_close(out[mask], ref[mask])
    torch.testing.assert_close(mod(x), _dense(mod, x, torch.ones(1, dtype=torch.bool)))


# ------------------------------------------------------------------------------------------------------------------
# BigBird
@pytest.mark.parametrize("T", [128, 120])
@pytest.mark.parametrize("heads", [1, 2, 4])
def test_bigbird_equals_dense_attention_restricted_to_its_pattern(T, heads):
    torch.manual_seed(1)
    b = 16
    mod = BigBirdAttention(DIM, heads, block=b, layer_index=2).double()
    x = torch.randn(2, T, DIM, dtype=torch.float64)
    mask = _mask(2, T)
    pat = mod.pattern(T)  # [H, 8, 8]
    assert pat.shape == (heads, 8, 8)
    assert pat[:, [0, -1], :].all() and pat[:, :, [0, -1]].all()  # global rows and columns are full
    tok = pat.repeat_interleave(b, dim=1).repeat_interleave(b, dim=2)[:, :T, :T]
    ref = _dense(mod, x, tok.unsqueeze(0) & mask[:, None, None, :])
    out = mod(x, mask)
    torch.testing.assert_close(out[mask], ref[mask])
    # without a mask every token is real
    torch.testing.assert_close(mod(x), _dense(mod, x, tok.unsqueeze(0)))


def test_bigbird_short_sequences_are_full_attention():
    """Up to 3 blocks the window and the globals cover everything: the result is full attention."""
    torch.manual_seed(2)
    for T in (10, 30, 40):  # 1, 2 and 3 blocks of 16
        big = BigBirdAttention(DIM, 2, block=16).double()
        full = FullAttention(DIM, 2).double()
        full.load_state_dict(big.state_dict())
        x = torch.randn(2, T, DIM, dtype=torch.float64)
        mask = _mask(2, T)
        torch.testing.assert_close(big(x, mask)[mask], full(x, mask)[mask])


@pytest.mark.parametrize("T,block,heads", [(128, 16, 4), (2048, 64, 8)])
def test_bigbird_pattern_window_globals_and_random_blocks(T, block, heads):
    mod = BigBirdAttention(DIM * 2, heads, block=block, num_random=3, layer_index=0, random_within=1024)
    n = T // block
    pat = mod.pattern(T)
    rand = mod._random_for(n)
    assert rand.shape == (heads, n - 2, 3)
    n_cand = min(n, 1024 // block)
    for h in range(heads):
        for i in range(1, n - 1):
            seen = {i - 1, i, i + 1, 0, n - 1}
            r = set(rand[h, i - 1].tolist())
            assert len(r) == 3 and not (r & seen) and max(r) < n_cand  # 3 new blocks, inside the first 1024 tokens
            assert set(pat[h, i].nonzero().flatten().tolist()) == seen | r
    # fixed across calls and modules with the same seed, different for another layer
    mod(torch.randn(1, T, DIM * 2))
    assert torch.equal(mod.pattern(), pat) and torch.equal(mod.pattern(T), pat)
    same = BigBirdAttention(DIM * 2, heads, block=block, layer_index=0)
    other = BigBirdAttention(DIM * 2, heads, block=block, layer_index=1)
    assert torch.equal(same.pattern(T), pat)
    assert not torch.equal(other.pattern(T), pat)
    assert "random_blocks" not in mod.state_dict()


def test_bigbird_pattern_differs_between_heads():
    pat = BigBirdAttention(DIM, 4, block=64).pattern(2048)
    assert any(not torch.equal(pat[0], pat[h]) for h in range(1, 4))


class _LargestTensor(TorchDispatchMode):
    """Records the largest number of elements of any tensor an op returns."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return out


def test_bigbird_memory_grows_linearly():
    torch.manual_seed(3)
    mod = BigBirdAttention(DIM, 2, block=64).eval()
    largest = {}
    for T in (512, 2048, 8192):
        x = torch.randn(1, T, DIM)
        mask = torch.ones(1, T, dtype=torch.bool)
        mod.pattern(T)
        with torch.no_grad(), _LargestTensor() as rec:
            mod(x, mask)
        largest[T] = rec.largest
    # the sparse scores have n - 2 query blocks (n = T / 64): 6, 30, 126 -> ratios 5.0 and 4.2; quadratic would be 16
    assert largest[2048] / largest[512] <= 5.0 + 1e-9
    assert largest[8192] / largest[2048] <= 4.5
    assert largest[2048] < 2048 * 2048 and largest[8192] < 8192 * 8192 / 8


# ------------------------------------------------------------------------------------------------------------------
# Reformer LSH
def test_lsh_rejects_odd_buckets():
    for n in (3, 9, 0):
        with pytest.raises(DTNBenchError, match="n_buckets"):
            LSHAttention(DIM, 2, n_buckets=n)


def _shared_qk(mod, x):
    H = mod.heads
    qk = _heads(x, mod.qk.weight, H)
    return qk, F.normalize(qk, dim=-1), _heads(x, mod.v.weight, H)


def test_lsh_two_buckets_is_full_shared_qk_attention():
    """With 2 chunks every chunk pair is the whole sequence: full attention with keys = normalised queries, the
    Reformer self-mask and the padding mask."""
    torch.manual_seed(4)
    T = 37
    mod = LSHAttention(DIM, 2, n_hashes=1, n_buckets=2).double()
    x = torch.randn(2, T, DIM, dtype=torch.float64)
    mask = _mask(2, T)
    qk, k, v = _shared_qk(mod, x)
    logits = (qk @ k.transpose(-1, -2)) / math.sqrt(qk.shape[-1])
    logits = logits.masked_fill(torch.eye(T, dtype=torch.bool), -1e5)
    logits = logits.masked_fill(~mask[:, None, None, :], float("-inf"))
    ref = _merge(logits.softmax(-1) @ v) @ mod.o.weight.T
    torch.testing.assert_close(mod(x, mask)[mask], ref[mask])


def _lsh_reference(mod, x, mask, quirks):
    """Brute force: per round, sort by (bucket, position) in Python, cut into n_buckets chunks of ceil(T / n_buckets),
    allow the keys of a query's chunk and of the previous chunk (cyclic), dense softmax over those; combine rounds
    with exp(lse_r - logsumexp_r lse)."""
    B, T, C = x.shape
    H, K, R = mod.heads, mod.n_buckets, mod.n_hashes
    qk, k, v = _shared_qk(mod, x)
    d = qk.shape[-1]
    buckets = mod.buckets(x, mask)
    assert buckets.shape == (B, H, R, T)
    L = -(-T // K)
    outs = torch.zeros(B, H, R, T, d, dtype=x.dtype)
    lses = torch.zeros(B, H, R, T, dtype=x.dtype)
    for b in range(B):
        for h in range(H):
            for r in range(R):
                order = sorted(range(T), key=lambda t, b=b, h=h, r=r: (int(buckets[b, h, r, t]), t))
                chunk = torch.empty(T, dtype=torch.long)
                for rank, t in enumerate(order):
                    chunk[t] = rank // L
                allowed = (chunk[None, :] == chunk[:, None]) | (chunk[None, :] == (chunk[:, None] - 1) % K)
                logits = qk[b, h] @ k[b, h].T
                logits = logits * math.sqrt(d) if quirks else logits / math.sqrt(d)
                if not quirks:
                    logits = logits.masked_fill(torch.eye(T, dtype=torch.bool), -1e5)
                    allowed = allowed & mask[b][None, :]
                logits = logits.masked_fill(~allowed, float("-inf"))
                lses[b, h, r] = torch.logsumexp(logits, -1)
                outs[b, h, r] = logits.softmax(-1) @ v[b, h]
    w = torch.exp(lses - torch.logsumexp(lses, dim=2, keepdim=True))
    out = _merge((w.unsqueeze(-1) * outs).sum(2))
    return out if quirks else out @ mod.o.weight.T


@pytest.mark.parametrize("n_hashes,n_buckets", [(1, 4), (3, 4), (2, 6)])
@pytest.mark.parametrize("quirks", [False, True])
def test_lsh_matches_brute_force_chunk_rule_and_round_combination(n_hashes, n_buckets, quirks):
    torch.manual_seed(5)
    T = 41
    mod = LSHAttention(DIM, 2, n_hashes=n_hashes, n_buckets=n_buckets, layer_index=3, lra_quirks=quirks).double()
    x = torch.randn(2, T, DIM, dtype=torch.float64)
    mask = _mask(2, T)
    ref = _lsh_reference(mod, x, mask, quirks)
    out = mod(x, mask)
    if quirks:  # padding takes part like real tokens: every position matches
        torch.testing.assert_close(out, ref)
    else:
        torch.testing.assert_close(out[mask], ref[mask])
    # the reference really is local: it differs from full attention over all real keys
    assert mod.buckets(x, mask)[mask[:, None, None, :].expand(-1, 2, n_hashes, -1)].unique().numel() > 1


def test_lsh_quirks_change_the_output_and_drop_the_output_projection():
    torch.manual_seed(6)
    plain = LSHAttention(DIM, 2, n_buckets=4)
    quirky = LSHAttention(DIM, 2, n_buckets=4, lra_quirks=True)
    quirky.load_state_dict({k: v for k, v in plain.state_dict().items() if not k.startswith("o.")})
    assert quirky.o is None and count_parameters(quirky) == count_parameters(plain) - DIM * DIM
    x = torch.randn(2, 40, DIM)
    assert not torch.allclose(plain(x), quirky(x), atol=1e-3)


def test_lsh_hashing_is_fixed():
    torch.manual_seed(7)
    x = torch.randn(2, 50, DIM)
    a = LSHAttention(DIM, 2, n_hashes=2, n_buckets=10, layer_index=0)
    b = LSHAttention(DIM, 2, n_hashes=2, n_buckets=10, layer_index=0)
    c = LSHAttention(DIM, 2, n_hashes=2, n_buckets=10, layer_index=1)
    b.load_state_dict(a.state_dict())
    c.load_state_dict(a.state_dict())
    assert "rotations" not in a.state_dict()
    bk = a.buckets(x)
    assert bk.min() >= 0 and bk.max() < 10
    a.train()
    a(x).sum().backward()  # a training step does not touch the hashing
    assert torch.equal(a.buckets(x), bk) and torch.equal(b.buckets(x), bk)
    assert not torch.equal(c.buckets(x), bk)


# ------------------------------------------------------------------------------------------------------------------
# padding never changes real tokens
@pytest.mark.parametrize("make", [
    lambda: FullAttention(DIM, 4),
    lambda: BigBirdAttention(DIM, 4, block=16, layer_index=1),
    lambda: LSHAttention(DIM, 4, n_hashes=2, n_buckets=4),
], ids=["transformer", "bigbird", "reformer"])
def test_padding_never_changes_real_tokens(make):
    torch.manual_seed(8)
    mod = make().double().eval()
    x = torch.randn(2, 70, DIM, dtype=torch.float64)
    mask = _mask(2, 70)
    y = x.clone()
    y[~mask] = 100 * torch.randn(int((~mask).sum()), DIM, dtype=torch.float64)
    a, b = mod(x, mask), mod(y, mask)
    assert torch.isfinite(a).all() and torch.isfinite(b).all()
    torch.testing.assert_close(a[mask], b[mask])


def test_attention_input_errors():
    with pytest.raises(DTNBenchError, match="divisible"):
        FullAttention(30, 4)
    with pytest.raises(DTNBenchError, match="window"):
        BigBirdAttention(DIM, 2, window=2)
    with pytest.raises(DTNBenchError, match="mask shape"):
        FullAttention(DIM, 2)(torch.randn(1, 5, DIM), torch.ones(1, 6, dtype=torch.bool))


# ------------------------------------------------------------------------------------------------------------------
# encoder
def _tokens(B=2, T=300, vocab=18, seed=0):
    g = torch.Generator().manual_seed(seed)
    tok = torch.randint(1, vocab, (B, T), generator=g)
    tok[1, 210:] = 0
    return tok


def _small(attention, norm, **kw):
    return LRAEncoder(18, dim=DIM, heads=2, depth=2, mlp_dim=64, max_len=320, attention=attention, norm=norm, **kw)


@pytest.mark.parametrize("norm", ["layernorm", "dtn", "rmsnorm"])
@pytest.mark.parametrize("attention", ["transformer", "bigbird", "reformer"])
def test_encoder_trains_and_ignores_padding(attention, norm):
    torch.manual_seed(9)
    model = _small(attention, norm)
    tok = _tokens()
    seen = []
    hooks = [m.register_forward_pre_hook(lambda mod, args: seen.append(args[1])) for m in model.modules()
             if isinstance(m, DTN)]
    logits = model(tok)
    assert logits.shape == (2, 10) and torch.isfinite(logits).all()
    torch.nn.functional.cross_entropy(logits, torch.tensor([1, 7])).backward()
    for name, p in model.named_parameters():
        if not name.endswith("pos_proj.bias"):  # DTN's position bias cancels in its softmax: no gradient
            assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert model.embed.weight.grad.abs().sum() > 0 and model.cls_token.grad.abs().sum() > 0
    if norm == "dtn":  # every DTN slot (norm1, norm2 per block, final norm) receives the padding mask, CLS included
        assert len(hooks) == 2 * 2 + 1 and len(seen) == len(hooks)
        expected = torch.cat([torch.ones(2, 1, dtype=torch.bool), tok != 0], dim=1)
        assert all(m is not None and torch.equal(m, expected) for m in seen)
    # padded positions never reach the logits (DTN included): replace the padding ids, keep the mask
    model.eval()
    mask = tok != 0
    noisy = tok.clone()
    noisy[~mask] = torch.randint(1, 18, (int((~mask).sum()),))
    with torch.no_grad():
        torch.testing.assert_close(model(noisy, mask), model(tok), rtol=1e-4, atol=1e-5)


def test_pooling_cls_and_mean():
    torch.manual_seed(10)
    tok = _tokens(T=120)
    cls = _small("transformer", "layernorm", pooling="cls").eval()
    mean = _small("transformer", "layernorm", pooling="mean", positions="learned").eval()
    assert cls.cls_token is not None and mean.cls_token is None
    with torch.no_grad():
        z, m = cls.forward_features(tok)
        assert z.shape == (2, 121, DIM) and m[:, 0].all()
        torch.testing.assert_close(cls(tok), cls.head(z[:, 0]))
        z, m = mean.forward_features(tok)
        assert z.shape == (2, 120, DIM) and torch.equal(m, tok != 0)
        pooled = torch.stack([z[i][m[i]].mean(0) for i in range(2)])
        torch.testing.assert_close(mean(tok), mean.head(pooled))
    assert isinstance(mean.pos_embed, torch.nn.Parameter) and cls.pos_embed is None
    assert "pos_table" not in cls.state_dict()


def test_encoder_registry_and_errors():
    assert set(ATTENTIONS.names()) == {"transformer", "bigbird", "reformer"}
    with pytest.raises(DTNBenchError, match="did you mean: bigbird"):
        _small("bigbrid", "layernorm")
    with pytest.raises(DTNBenchError, match="unknown norm 'dnt'"):
        _small("transformer", "dnt")
    with pytest.raises(DTNBenchError, match="attention 'reformer'"):
        build_attention("reformer", DIM, 2, block=16)
    model = _small("transformer", "layernorm")
    with pytest.raises(DTNBenchError, match="longer than max_len=320"):
        model(torch.ones(1, 321, dtype=torch.long))
    with pytest.raises(DTNBenchError, match="token"):
        model(torch.full((1, 5), 18, dtype=torch.long))
    with pytest.raises(DTNBenchError, match="pooling"):
        _small("transformer", "layernorm", pooling="max")


def test_attention_kwargs_and_layer_seeds_reach_the_layers():
    model = _small("bigbird", "layernorm", attention_kwargs={"block": 16, "num_random": 2})
    a0, a1 = model.blocks[0].attn, model.blocks[1].attn
    assert (a0.block, a0.num_random, a0.layer_index, a1.layer_index) == (16, 2, 0, 1)
    assert not torch.equal(a0.pattern(256), a1.pattern(256))
    quirky = _small("reformer", "layernorm", attention_kwargs={"lra_quirks": True})
    assert quirky.blocks[0].attn.lra_quirks and quirky.blocks[1].attn.layer_index == 1


def test_count_parameters():
    model = _small("transformer", "layernorm")
    assert count_parameters(model) == sum(p.numel() for p in model.parameters())
    model.embed.weight.requires_grad_(False)
    assert count_parameters(model) == sum(p.numel() for p in model.parameters()) - 18 * DIM
    assert count_parameters(model, trainable_only=False) == sum(p.numel() for p in model.parameters())
