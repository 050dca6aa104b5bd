"""Arithmetic protocols on replicated shares over Z_2^64.

Follows ABY3 (Mohassel and Rindal, CCS 2018), section 3 and 5, in the semi-honest,
honest-majority setting:

* :func:`input_from`: a committee member shares its own values (one round, 2n words).
* :func:`input_product`: member 0's private words times what members 1 and 2 both know,
  shared in the round that inputs them.
* :func:`open_all` / :func:`open_to`: reveal to every member or to one (one round).
* :func:`mul`, :func:`matmul`: local 3-out-of-3 products plus a zero-sharing, then one
  reshare: one round, one ring element per party per output element.
* :func:`trunc`, :func:`mul_fixed`, :func:`matmul_fixed`: exact fixed-point truncation.

Truncation. ABY3's share truncation (Pi_trunc1) fails with a huge error with probability
about 2^(l+1-64) for l-bit values, which is far too likely for 64-bit rings at the
magnitudes statistics produce. We use instead the wrap-bit method of Escudero, Ghosh,
Keller, Rachuri and Scholl (CRYPTO 2020, section 5), specialised to three parties:

1. P0 and P1 draw a uniform mask r (from their common key K_1) and know r >> m and the
   top bit rho of r. P2 receives c = x + 2^62 + r (mod 2^64), uniform to it.
2. For x' = x + 2^62 in [0, 2^63), the sum x' + r wraps exactly when rho = 1 and the top bit
   of c is 0, so with tau = 1 - msb(c) known to P2 and rho known to P0/P1,
   floor(x'/2^m) = (c >> m) - (r >> m) + 2^(64-m) * rho * tau + e, e in {0, 1},
   with P(e = 1) = (x' mod 2^m) / 2^m: unbiased probabilistic rounding.
3. P2 shares (c >> m) and tau with P0 through their key K_0 and sends P1 the
   complements; P0 and P1 then hold an additive sharing of the result, which they turn
   into a replicated sharing by sending P2 one masked value each.

The result is right for every |x| < 2^62, with error below one unit in the last place.
P2 receives 2n words (P0's message carries both its round-1 and round-3 parts), then n
from P1; P1 receives 2n; P0 receives nothing. Three message hops.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .party import PARTIES, Party, Protocol, exchange
from .ring import U64
from .shares import AShare, S

OFFSET_BITS = 62
_OFFSET = np.uint64(1 << OFFSET_BITS)
_63 = np.uint64(63)


def input_pair(p: Party, owner: int, values: U64 | None, n: int, xor: bool = False) -> Protocol[tuple[U64, U64]]:
    """This member's two components of a value member ``owner`` shares (flat, n words).

    Components x_o and x_{o+1} come from keys K_o, K_{o+1}; the owner sends the third
    (x - x_o - x_{o+1}, or x ^ x_o ^ x_{o+1} for boolean sharing with ``xor``) to the two
    members that hold it. One round, 2n words from the owner.
    """
    o, i = owner, p.index
    if i == o:
        if values is None:
            raise ValueError("the owner must supply the values it inputs")
        x = np.asarray(values, dtype=np.uint64).reshape(-1)
        if x.size != n:
            raise ValueError(f"input has {x.size} elements, expected {n}")
        a, b = p.rand.stream(o, n), p.rand.stream((o + 1) % 3, n)
        c = (x ^ a ^ b) if xor else (x - a - b)
        yield from exchange(send={(o + 1) % 3: c, (o + 2) % 3: c})
        return a, b
    if i == (o + 1) % 3:
        b = p.rand.stream((o + 1) % 3, n)
        got = yield from exchange(expect={o: n})
        return b, got[o]
    a = p.rand.stream(o, n)
    got = yield from exchange(expect={o: n})
    return got[o], a


def input_from(p: Party, owner: int, values: U64 | None, shape: tuple[int, ...]) -> Protocol[AShare]:
    """Member ``owner`` shares ``values`` (ring elements); the others pass ``None``."""
    first, second = yield from input_pair(p, owner, values, int(np.prod(shape, dtype=np.int64)))
    return AShare.from_pair(first.reshape(shape), second.reshape(shape))


def input_product(
    p: Party,
    values: U64 | None,
    n_in: int,
    n_out: int,
    linear: Callable[[U64], U64] | None = None,
    extra: U64 | None = None,
    xor: bool = False,
) -> Protocol[tuple[U64, U64]]:
    """This member's two components of f(t) = L(t) + c in one round, where member 0 alone
    knows t (``values``, n_in words) and members 1 and 2 both know the linear map L
    (``linear``, n_in words to n_out) and the words c (``extra``, n_out). With ``xor``, for
    boolean sharing, + is XOR and L is XOR-linear.

    Both operands of each product are known to one side, so the product needs no
    multiplication protocol, only a sharing (the input sharing of :func:`input_pair` with
    the output drawn the same way). Member 0 shares t = t_0 + t_1 + t_2 with t_j from key
    K_j and sends t_2 to members 1 and 2; the output components f_0, f_1 are fresh draws from
    K_0, K_1 (member 0 holds both, computing nothing). Member 2, holder of K_0, sends member 1
    L(t_0) - f_0; member 1, holder of K_1, sends member 2 L(t_1) - f_1; each then has
    f_2 = (L(t_0) - f_0) + (L(t_1) - f_1) + L(t_2) + c = f - f_0 - f_1. Each message is
    masked by a fresh draw from the key its receiver lacks. Member 0 sends 2 n_in words,
    members 1 and 2 n_out each, all in the same round: where a product of a sharing just
    input with a value known to two members (ABY3, section 5.3) takes two.
    """
    i = p.index
    sub = np.bitwise_xor if xor else np.subtract
    add = np.bitwise_xor if xor else np.add
    if i == 0:
        if values is None:
            raise ValueError("member 0 must supply the values it inputs")
        t = np.asarray(values, dtype=np.uint64).reshape(-1)
        if t.size != n_in:
            raise ValueError(f"input has {t.size} elements, expected {n_in}")
        r0, r1 = p.rand.stream(0, n_in + n_out), p.rand.stream(1, n_in + n_out)
        third = sub(sub(t, r0[:n_in]), r1[:n_in])
        yield from exchange(send={1: third, 2: third})
        return r0[n_in:], r1[n_in:]
    if linear is None or extra is None:
        raise ValueError("members 1 and 2 must supply the linear map and the constant")
    other = 3 - i
    r = p.rand.stream(1 if i == 1 else 0, n_in + n_out)
    mine = sub(linear(r[:n_in]), r[n_in:])
    got = yield from exchange(send={other: mine}, expect={0: n_in, other: n_out})
    f2: U64 = add(add(mine, got[other]), add(linear(got[0]), extra))
    return (r[n_in:], f2) if i == 1 else (f2, r[n_in:])


def component_only(p: Party, pair: U64, j: int, kind: type[S]) -> S:
    """The sharing whose component j is taken from this member's ``pair`` and the others are 0.

    ``pair`` has this member's layout (shape (2, ...)); members that do not hold component j
    put zeros. No communication. Serves both sharings (``kind`` AShare or BShare).
    """
    out = np.zeros(pair.shape, dtype=np.uint64)  # one pass: no zero vectors stacked after the copy
    if p.index == j:
        out[0] = pair[0]
    elif p.index == (j - 1) % 3:
        out[1] = pair[1]
    return kind(out)


def input_all(p: Party, mine: U64, sizes: tuple[int, int, int]) -> Protocol[list[AShare]]:
    """Every member shares its own vector at once (one round): member o's has ``sizes[o]`` words.

    The same sharing as :func:`input_pair` for each owner, with the three owners' messages to
    each peer packed into one: member i sends its third component to both others.
    """
    i = p.index
    own = np.asarray(mine, dtype=np.uint64).reshape(-1)
    if own.size != sizes[i]:
        raise ValueError(f"member {i} inputs {own.size} words, the plan expects {sizes[i]}")
    draws = {o: (p.rand.stream(o, sizes[o]) if p.rand.holds(o) else None) for o in PARTIES}
    nxt = {o: p.rand.stream((o + 1) % 3, sizes[o]) if p.rand.holds((o + 1) % 3) else None for o in PARTIES}
    a, b = draws[i], nxt[i]
    assert a is not None and b is not None  # member i holds keys K_i and K_{i+1}
    third = own - a - b
    got = yield from exchange(
        send={p.next: third, p.prev: third}, expect={p.next: sizes[p.next], p.prev: sizes[p.prev]}
    )
    out: list[AShare] = []
    for o in PARTIES:
        if o == i:
            out.append(AShare.from_pair(a, b))
        elif i == (o + 1) % 3:  # holds (x_{o+1}, x_{o+2})
            first = nxt[o]
            assert first is not None
            out.append(AShare.from_pair(first, got[o]))
        else:  # i == o + 2: holds (x_{o+2}, x_o)
            second = draws[o]
            assert second is not None
            out.append(AShare.from_pair(got[o], second))
    return out


def input_sum(p: Party, mine: U64) -> Protocol[AShare]:
    """The sum of the three members' own vectors (one size), shared: one round, one vector sent
    per member (half of :func:`input_all`'s, for when only the sum is needed). Member i's vector
    plus its zero share alpha_i (the three alphas sum to zero, and alpha_i hides the vector from
    the member that receives it: it lacks K_{i+2}) is a 3-out-of-3 sharing of the sum, then
    reshared to replicated as after a product."""
    own = np.asarray(mine, dtype=np.uint64).reshape(-1)
    pair = new_pair(own.shape)
    np.add(own, p.rand.zero_share(own.size), out=pair[0])
    return (yield from reshare(p, pair, AShare))


def constant(p: Party, values: U64, kind: type[S]) -> S:
    """A public value as a sharing (x_0 = value, x_1 = x_2 = 0): no communication."""
    v = np.asarray(values, dtype=np.uint64)
    return component_only(p, np.broadcast_to(v, (2, *v.shape)), 0, kind)  # a view: v copied once


def add_public(p: Party, x: AShare, c: U64) -> AShare:
    """x + c for public ring elements c (only component x_0 changes)."""
    return x + constant(p, np.broadcast_to(np.asarray(c, dtype=np.uint64), x.shape), AShare)


def open_all(p: Party, x: AShare) -> Protocol[U64]:
    """Reveal x to all three members: each sends its first component to the next."""
    flat = x.v.reshape(2, -1)
    got = yield from exchange(send={p.next: flat[0]}, expect={p.prev: flat.shape[1]})
    out: U64 = (flat[0] + flat[1] + got[p.prev]).reshape(x.shape)
    return out


def open_to(p: Party, x: AShare, target: int) -> Protocol[U64 | None]:
    """Reveal x to member ``target`` only (it receives x_{t+2} from member t+2)."""
    flat = x.v.reshape(2, -1)
    if p.index == target:
        got = yield from exchange(expect={(target + 2) % 3: flat.shape[1]})
        out: U64 = (flat[0] + flat[1] + got[(target + 2) % 3]).reshape(x.shape)
        return out
    if p.index == (target + 2) % 3:
        yield from exchange(send={target: flat[0]})
    return None


def reshare(p: Party, pair: U64, kind: type[S]) -> Protocol[S]:
    """3-out-of-3 shares (already masked) to replicated: each member sends z_i to member i-1.

    ``pair`` has shape (2, ...) with this member's z_i in ``pair[0]``; ``pair[1]`` is filled in
    place with z_{i+1} from member i+1, so no component is copied. Works for both sharings
    (``kind`` AShare or BShare): only the components move.
    """
    flat = pair[0, ...].reshape(-1)  # a view, also for 0-d shares
    got = yield from exchange(send={p.prev: flat}, expect={p.next: flat.size})
    pair[1, ...] = got[p.next].reshape(pair.shape[1:])
    return kind(pair)


def new_pair(shape: tuple[int, ...]) -> U64:
    """An uninitialised (2, *shape) buffer for a share about to be computed."""
    return np.empty((2, *shape), dtype=np.uint64)


def _local_product(p: Party, x: AShare, y: AShare) -> U64:
    """A pair buffer whose first row is z_i = x_i y_i + x_i y_{i+1} + x_{i+1} y_i + alpha_i."""
    pair = new_pair(np.broadcast_shapes(x.shape, y.shape))
    z = pair[0, ...]
    np.add(y.v[0], y.v[1], out=z)
    np.multiply(x.v[0], z, out=z)
    z += x.v[1] * y.v[0]
    z += p.rand.zero_share(z.size).reshape(z.shape)
    return pair


def _local_matmul(p: Party, x: AShare, y: AShare) -> U64:
    with np.errstate(over="ignore"):  # a vector dot product gives numpy scalars, which warn on wrap
        z: U64 = np.asarray(x.v[0] @ (y.v[0] + y.v[1]) + x.v[1] @ y.v[0], dtype=np.uint64)
    pair = new_pair(z.shape)
    np.add(z, p.rand.zero_share(z.size).reshape(z.shape), out=pair[0, ...])
    return pair


def mul(p: Party, x: AShare, y: AShare) -> Protocol[AShare]:
    """Elementwise product of ring elements (integers): one round."""
    return (yield from reshare(p, _local_product(p, x, y), AShare))


def matmul(p: Party, x: AShare, y: AShare) -> Protocol[AShare]:
    """Matrix product (numpy ``@`` semantics) with one reshare per output element."""
    return (yield from reshare(p, _local_matmul(p, x, y), AShare))


def trunc(p: Party, x: AShare, bits: int) -> Protocol[AShare]:
    """x / 2^bits for |x| < 2^62, with error below one unit (see module docstring)."""
    if p.index == 0:
        z = x.v[0] + x.v[1]
    elif p.index == 2:
        z = x.v[0]
    else:
        z = np.zeros(x.shape, dtype=np.uint64)
    return (yield from _trunc_additive(p, z, bits, p1_sends=False))


def mul_fixed(p: Party, x: AShare, y: AShare, frac_bits: int) -> Protocol[AShare]:
    """Fixed-point product: the local product truncated by ``frac_bits`` (3 hops)."""
    return (yield from _trunc_additive(p, _local_product(p, x, y)[0, ...], frac_bits, p1_sends=True))


def matmul_fixed(p: Party, x: AShare, y: AShare, frac_bits: int) -> Protocol[AShare]:
    """Fixed-point matrix product, truncated once per output element."""
    return (yield from _trunc_additive(p, _local_matmul(p, x, y)[0, ...], frac_bits, p1_sends=True))


def _trunc_additive(p: Party, z: U64, m: int, p1_sends: bool) -> Protocol[AShare]:
    """Truncate x = z_0 + z_1 + z_2 (3-out-of-3, masked) by m bits into replicated shares.

    With ``p1_sends`` false, z_1 is zero and P1 sends nothing in the first round.
    """
    if not 1 <= m <= OFFSET_BITS:
        raise ValueError(f"truncation by {m} bits is outside [1, {OFFSET_BITS}]")
    shape = z.shape
    z = z.reshape(-1)
    n = z.size
    mm, up = np.uint64(m), np.uint64(64 - m)
    i = p.index
    if i == 0:
        r = p.rand.stream(1, n)
        a = p.rand.stream(0, 2 * n)
        be = p.rand.stream(1, 2 * n)
        rho = r >> _63
        part = a[n:] + ((a[:n] * rho) << up) - (r >> mm) - (_OFFSET >> mm)
        s0 = part - be[:n] + be[n:]
        yield from exchange(send={2: np.concatenate([z + r + _OFFSET, s0])})
        return AShare.from_pair(s0.reshape(shape), be[:n].reshape(shape))
    if i == 1:
        r = p.rand.stream(1, n)
        be = p.rand.stream(1, 2 * n)
        got = yield from exchange(send={2: z} if p1_sends else {}, expect={2: 2 * n})
        u, t = got[2][:n], got[2][n:]
        s2 = u + ((t * (r >> _63)) << up) - be[n:]
        yield from exchange(send={2: s2})
        return AShare.from_pair(be[:n].reshape(shape), s2.reshape(shape))
    a = p.rand.stream(0, 2 * n)
    got = yield from exchange(expect={0: 2 * n, 1: n} if p1_sends else {0: 2 * n})
    c = got[0][:n] + z
    if p1_sends:
        c = c + got[1]
    s0 = got[0][n:]
    tau = np.uint64(1) - (c >> _63)
    got = yield from exchange(send={1: np.concatenate([(c >> mm) - a[n:], tau - a[:n]])}, expect={1: n})
    return AShare.from_pair(got[1].reshape(shape), s0.reshape(shape))
