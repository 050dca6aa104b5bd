"""Boolean sharing on bit-packed words, conversions, and comparisons.

Following ABY3 (Mohassel and Rindal, CCS 2018), sections 5.3 and 5.4:

* :func:`and_`: one round, one word per party per output word (64 AND gates per word).
* :func:`a2b`: arithmetic to boolean. Member 0 knows x_0 + x_1 and shares it as a boolean
  input; x_2 is already a boolean sharing (its two holders hold it, nobody else needs it).
  A Kogge-Stone parallel-prefix adder on the packed words adds the two: 1 + 1 + 6 rounds.
* :func:`msb_bool`: the top bit of x by a carry tree for the carry into bit 63 alone, its
  first level fused with the input of x_0 + x_1 and its words halved at every level after:
  6 rounds, about 4 words per value from member 0 and 2 from each of the others.
* :func:`bit_inject`: a shared bit to an arithmetic 0/1 (b_0 xor b_1 is known to member 0,
  b_2 to members 1 and 2, and b is linear in the first given the second): 1 round.
* :func:`b2a`: a whole boolean word to arithmetic, by subtracting a random arithmetic mask
  inside a boolean adder and opening the result to the two holders of component 0.
* :func:`prefix_or`: OR of each bit with all bits above it (6 rounds).
* :func:`ltz`, :func:`lt` (msb and injection, 7 rounds), :func:`eq`, :func:`select`,
  :func:`maximum`.

All of it is vectorized: one round handles every word of the input arrays.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .arithmetic import component_only, constant, input_pair, input_product, mul, new_pair, reshare
from .party import Party, Protocol, exchange
from .ring import ALL_ONES, U64
from .shares import AShare, BShare

_ONE = np.uint64(1)

# _UPPER[s]: the upper half of every 2s-bit block of a word.
_UPPER = {s: np.uint64(sum(1 << b for b in range(64) if b % (2 * s) >= s)) for s in (1, 2, 4, 8, 16, 32)}
# The top 2-bit span of both values in a first-level word (bits 63 and 62).
_TOP = np.uint64(0xC000000000000000)
# Where the carry tree leaves value w + (n/64) rev6(k) of word w: bit 63 - rev6(k).
_TREE_BIT = np.array([63 - int(f"{k:06b}"[::-1], 2) for k in range(64)], dtype=np.uint64)


def xor_public(p: Party, x: BShare, c: U64 | np.uint64) -> BShare:
    """x ^ c for public words c (only component 0 changes)."""
    return x ^ constant(p, np.broadcast_to(np.asarray(c, dtype=np.uint64), x.shape), BShare)


def not_(p: Party, x: BShare) -> BShare:
    """Bitwise complement (local)."""
    return xor_public(p, x, ALL_ONES)


def and_(p: Party, x: BShare, y: BShare) -> Protocol[BShare]:
    """Bitwise AND of shared words (one round)."""
    (z,) = yield from and_many(p, [(x, y)])
    return z


def and_many(p: Party, pairs: Sequence[tuple[BShare, BShare]]) -> Protocol[list[BShare]]:
    """Several bitwise ANDs in one round, one message per member.

    z_i = x_i y_i ^ x_i y_{i+1} ^ x_{i+1} y_i ^ (XOR zero-share), then a reshare.
    """
    shapes = [np.broadcast_shapes(x.shape, y.shape) for x, y in pairs]
    sizes = [int(np.prod(shape, dtype=np.int64)) for shape in shapes]
    pair = new_pair((sum(sizes),))
    start = 0
    for (x, y), shape, size in zip(pairs, shapes, sizes, strict=True):
        z = pair[0, start : start + size].reshape(shape)
        np.bitwise_xor(y.v[0], y.v[1], out=z)
        z &= x.v[0]
        z ^= x.v[1] & y.v[0]
        start += size
    pair[0] ^= p.rand.xor_zero_share(pair.shape[1])
    both = yield from reshare(p, pair, BShare)
    out, start = [], 0
    for shape, size in zip(shapes, sizes, strict=True):
        out.append(BShare(both.v[:, start : start + size].reshape(2, *shape)))
        start += size
    return out


def or_(p: Party, x: BShare, y: BShare) -> Protocol[BShare]:
    """Bitwise OR: x ^ y ^ (x & y)."""
    both = yield from and_(p, x, y)
    return x ^ y ^ both


def prefix_or(p: Party, x: BShare) -> Protocol[BShare]:
    """Bit i of the result is the OR of bits i..63 of x (6 rounds, one AND word each).

    Level s ORs in the copy shifted right by s = 1, 2, 4, ..., 32, so after it each bit
    covers the 2s bits from itself upwards. The most significant set bit of x is then
    ``r ^ (r >> 1)`` and bit 0 of r tells whether x is nonzero.
    """
    for s in (1, 2, 4, 8, 16, 32):
        x = yield from or_(p, x, x.rshift(s))
    return x


def input_bool(p: Party, owner: int, values: U64 | None, shape: tuple[int, ...]) -> Protocol[BShare]:
    """Member ``owner`` shares words as a boolean sharing (one round)."""
    first, second = yield from input_pair(p, owner, values, int(np.prod(shape, dtype=np.int64)), xor=True)
    return BShare.from_pair(first.reshape(shape), second.reshape(shape))


def add_bool(p: Party, a: BShare, b: BShare) -> Protocol[BShare]:
    """Sum of two boolean-shared words modulo 2^64 (Kogge-Stone adder, 1 + 6 rounds).

    Generate g = a & b and propagate q = a ^ b; at level s a span's (G, P) combines with
    the span s bits below: G ^= P & (G << s), P &= P << s. G and P & (G << s) are never
    both set, so XOR serves as OR. After six levels bit i of G is the carry out of bit i.
    """
    g = yield from and_(p, a, b)
    q = a ^ b
    prop = q
    for s in (1, 2, 4, 8, 16):
        carried, prop = yield from and_many(p, [(prop, g.lshift(s)), (prop, prop.lshift(s))])
        g = g ^ carried
    g = g ^ (yield from and_(p, prop, g.lshift(32)))
    return q ^ g.lshift(1)


def a2b(p: Party, x: AShare) -> Protocol[BShare]:
    """Arithmetic to boolean sharing of the same 64-bit words (8 rounds)."""
    flat = x.ravel()
    n = flat.shape[0]
    own = (flat.v[0] + flat.v[1]) if p.index == 0 else None
    y01 = yield from input_bool(p, 0, own, (n,))
    total = yield from add_bool(p, y01, component_only(p, flat.v, 2, BShare))
    return total.reshape(*x.shape)


def bit_inject(p: Party, b: BShare) -> Protocol[AShare]:
    """Bit 0 of each shared word as an arithmetic 0/1 value (1 round).

    b = t ^ u with t = b_0 ^ b_1 known to member 0 and u = b_2 known to members 1 and 2, and
    t ^ u = t (1 - 2u) + u is linear in t for those who know u: one :func:`input_product`.
    """
    bits = b.v.reshape(2, -1) & _ONE
    n = bits.shape[1]
    if p.index == 0:
        first, second = yield from input_product(p, bits[0] ^ bits[1], n, n)
    else:
        u = bits[1] if p.index == 1 else bits[0]
        sign = _ONE - (u << _ONE)

        def times_sign(t: U64) -> U64:
            out: U64 = t * sign
            return out

        first, second = yield from input_product(p, None, n, n, times_sign, u)
    return AShare.from_pair(first, second).reshape(*b.shape)


def _upper(w: U64, s: int) -> U64:
    """Pack the upper s-bit spans of every 2s-bit block of two halves of the words into one.

    Word k of the result takes the upper halves of the blocks of word k and, shifted down
    into the lower halves, those of word k + h (h words in each half of the last axis).
    XOR-linear, so it applies to boolean shares.
    """
    h = w.shape[-1] // 2
    up = _UPPER[s]
    out: U64 = (w[..., :h] & up) | ((w[..., h:] >> np.uint64(s)) & ~up)
    return out


def _lower(w: U64, s: int) -> U64:
    """As :func:`_upper` for the lower spans, moved up to where the upper ones go."""
    h = w.shape[-1] // 2
    up = _UPPER[s]
    out: U64 = ((w[..., :h] << np.uint64(s)) & up) | (w[..., h:] & ~up)
    return out


def msb_bool(p: Party, x: AShare) -> Protocol[BShare]:
    """The top bit of each x, as a boolean sharing in bit 0 (6 rounds).

    x = a + b with a = x_0 + x_1, known to member 0, and b = x_2, known to members 1 and 2;
    its top bit is a_63 ^ b_63 ^ c, where c, the carry into bit 63, is the generate signal G
    of bits 0..62 (the log-depth carry tree of Brent and Kung, IEEE Trans. Comput. 1982,
    evaluated for the top carry only, as in the MSB extraction of ABY3, section 5.3). Spans
    of bits combine pairwise, (G, P) = (G_hi ^ P_hi G_lo, P_hi P_lo), and the top span's G
    enters every level linearly, so a_63 ^ b_63 is put in it: the span of bits 63 and 62
    has G = a_63 ^ b_63 ^ a_62 b_62 and P = a_62 ^ b_62, and the tree's G is the top bit.

    Level 1 (2-bit spans) is bilinear in words of a and words of b:
    G = a_hi b_hi ^ (a_hi a_lo) b_lo ^ a_lo (b_hi b_lo) and
    P = (a_hi a_lo) ^ a_hi b_lo ^ a_lo b_hi ^ (b_hi b_lo); for the top span member 0 puts 0
    for a_hi a_lo and the others 1, 0 and b_lo for b_hi, b_lo and b_hi b_lo, and b_63 in
    the constant. So it is one :func:`input_product` of member 0's three terms, in the
    round that inputs a: no separate input round, no AND round for the bitwise generate.
    Each later level packs the spans it combines: :func:`_upper` and :func:`_lower` put the
    upper and lower spans of two words into one word each (bit moves, local on shares), so
    levels 2 to 5 AND 1/2, 1/4, 1/8 and 1/16 of a word per value (G and P) and level 6 only
    G (1/64): 61/64 of a word per value and member, where :func:`add_bool` sends 12. Member 0
    sends 3 words per value in level 1, members 1 and 2 one each. Values are padded to a
    multiple of 64. :func:`msb_tree_reference` is the same circuit on one pair of words.
    """
    flat = x.ravel()
    n = flat.shape[0]
    h = -(-n // 64) * 32
    i = p.index
    own = np.zeros(2 * h, dtype=np.uint64)
    if i == 0:
        np.add(flat.v[0], flat.v[1], out=own[:n])
        a_hi, a_lo = _upper(own, 1), _lower(own, 1)
        terms = np.concatenate([a_hi, a_lo, a_hi & a_lo & ~_TOP])
        first, second = yield from input_product(p, terms, 3 * h, 2 * h, xor=True)
    else:
        own[:n] = flat.v[1 if i == 1 else 0]
        b_hi, b_lo = _upper(own, 1), _lower(own, 1)
        m_hi, m_lo = b_hi | _TOP, b_lo & ~_TOP
        m_both = m_hi & b_lo

        def level1(t: U64) -> U64:
            hi, lo, both = t.reshape(3, h)
            return np.concatenate([(hi & m_hi) ^ (both & m_lo) ^ (lo & m_both), both ^ (hi & m_lo) ^ (lo & m_hi)])

        extra = np.concatenate([b_hi & _TOP, m_both])
        first, second = yield from input_product(p, None, 3 * h, 2 * h, level1, extra, xor=True)
    spans = np.stack([first.reshape(2, h), second.reshape(2, h)])  # (component, G or P, word)
    for s in (2, 4, 8, 16):
        up, low = _upper(spans, s), _lower(spans, s)
        carried = yield from and_(p, BShare(up[:, 1:]), BShare(low))
        spans = np.concatenate([up[:, :1] ^ carried.v[:, :1], carried.v[:, 1:]], axis=1)
    up, low = _upper(spans, 32), _lower(spans[:, :1], 32)
    top = BShare(up[:, 0]) ^ (yield from and_(p, BShare(up[:, 1]), BShare(low[:, 0])))
    bits = (top.v[:, None, :] >> _TREE_BIT[:, None]) & _ONE
    return BShare(bits.reshape(2, -1)[:, :n]).reshape(*x.shape)


def msb_tree_reference(a: int, b: int) -> int:
    """Plain reference for :func:`msb_bool`: its carry tree on one pair of 64-bit words,
    bit by bit and unpacked. Returns the top bit of a + b (mod 2^64)."""
    g = [(a >> k) & (b >> k) & 1 for k in range(64)]
    q = [((a ^ b) >> k) & 1 for k in range(64)]
    spans = [(g[k + 1] ^ (q[k + 1] & g[k]), q[k + 1] & q[k]) for k in range(0, 62, 2)]
    spans.append((q[63] ^ g[62], q[62]))
    while len(spans) > 1:
        pairs = zip(spans[::2], spans[1::2], strict=True)
        spans = [(g_hi ^ (p_hi & g_lo), p_hi & p_lo) for (g_lo, p_lo), (g_hi, p_hi) in pairs]
    return spans[0][0]


def ltz(p: Party, x: AShare) -> Protocol[AShare]:
    """[x < 0] as arithmetic 0/1, reading x as a signed 64-bit value (7 rounds)."""
    return (yield from bit_inject(p, (yield from msb_bool(p, x))))


def lt(p: Party, x: AShare, y: AShare) -> Protocol[AShare]:
    """[x < y] as arithmetic 0/1; exact when |x - y| < 2^63 (always for signed values
    of at most 62 bits, such as fixed-point numbers in range)."""
    return (yield from ltz(p, x - y))


def eq(p: Party, x: AShare, y: AShare) -> Protocol[AShare]:
    """[x == y] as arithmetic 0/1 (1 + 6 + 1 rounds), without an adder.

    d = x - y = a + d_2 with a = d_0 + d_1 known to member 0 and d_2 a component; d = 0 exactly
    when a = -d_2, i.e. when every bit of a ^ (-d_2) is clear. Member 0 inputs a as a boolean
    sharing (the first step of :func:`a2b`), -d_2 is a boolean sharing with one nonzero
    component (no communication), and an AND tree over the complemented bits tells whether all
    are clear: the carries of :func:`a2b`'s adder are never needed.
    """
    return (yield from is_zero(p, x - y))


def is_zero(p: Party, x: AShare) -> Protocol[AShare]:
    """[x == 0] as arithmetic 0/1: :func:`eq` on a difference already formed (same rounds)."""
    d = x.ravel()
    own = (d.v[0] + d.v[1]) if p.index == 0 else None
    a = yield from input_bool(p, 0, own, (d.shape[0],))
    minus = component_only(p, d.v, 2, BShare)
    np.negative(minus.v, out=minus.v)  # -d_2 (the zero components stay zero): no negated copy of d
    w = not_(p, a ^ minus).reshape(*x.shape)
    for s in (32, 16, 8, 4, 2, 1):
        w = yield from and_(p, w, w.rshift(s))
    return (yield from bit_inject(p, w))


def select(p: Party, c: AShare, x: AShare, y: AShare) -> Protocol[AShare]:
    """c ? x : y for c in {0, 1}: y + c (x - y), one round."""
    return y + (yield from mul(p, c, x - y))


def maximum(p: Party, x: AShare) -> Protocol[tuple[AShare, AShare]]:
    """Maximum over the last axis and its index (first of equal maxima), as sharings.

    A tournament: each level compares adjacent pairs with one :func:`lt` over the whole
    array and selects values and indices in one product round; ceil(log2 k) levels.
    Pairing neighbours keeps every block in index order, so ties go to the first index.
    """
    k = x.shape[-1]
    if k == 0:
        raise ValueError("maximum of an empty axis")
    idx = constant(p, np.broadcast_to(np.arange(k, dtype=np.uint64), x.shape).copy(), AShare)
    vals = x
    while vals.shape[-1] > 1:
        h = vals.shape[-1] // 2
        a, b = vals[..., 0 : 2 * h : 2], vals[..., 1 : 2 * h : 2]
        ia, ib = idx[..., 0 : 2 * h : 2], idx[..., 1 : 2 * h : 2]
        b_wins = yield from lt(p, a, b)
        both = yield from mul(
            p,
            AShare.concat([b_wins, b_wins], axis=len(x.shape) - 1),
            AShare.concat([b - a, ib - ia], axis=len(x.shape) - 1),
        )
        new_vals = a + both[..., :h]
        new_idx = ia + both[..., h:]
        if vals.shape[-1] % 2:
            new_vals = AShare.concat([new_vals, vals[..., 2 * h :]], axis=len(x.shape) - 1)
            new_idx = AShare.concat([new_idx, idx[..., 2 * h :]], axis=len(x.shape) - 1)
        vals, idx = new_vals, new_idx
    return vals[..., 0], idx[..., 0]


def b2a(p: Party, x: BShare) -> Protocol[AShare]:
    """Boolean-shared words to arithmetic sharing of the same integers (1 + 7 + 1 rounds).

    Components s_1 (key K_1) and s_2 (key K_2) are random; member 1 knows u = s_1 + s_2
    and inputs -u as a boolean sharing; the adder gives s_0 = x - u in boolean form,
    which is opened to members 0 and 2, its holders. Each of them lacks one of s_1, s_2,
    so s_0 looks uniform to it.
    """
    flat = x.ravel()
    n = flat.shape[0]
    i = p.index
    s1 = p.rand.stream(1, n) if i in (0, 1) else np.zeros(n, dtype=np.uint64)
    s2 = p.rand.stream(2, n) if i in (1, 2) else np.zeros(n, dtype=np.uint64)
    mask = yield from input_bool(p, 1, np.uint64(0) - (s1 + s2) if i == 1 else None, (n,))
    y = yield from add_bool(p, flat, mask)
    # Open y to members 0 and 2, the holders of component 0: member 1 holds (y_1, y_2) and
    # sends member 0 the y_2 it lacks and member 2 the y_1 it lacks.
    if i == 1:
        yield from exchange(send={0: y.v[1], 2: y.v[0]})
        return AShare.from_pair(s1, s2).reshape(*x.shape)
    got = yield from exchange(expect={1: n})
    s0 = y.v[0] ^ y.v[1] ^ got[1]
    pair = (s0, s1) if i == 0 else (s2, s0)
    return AShare.from_pair(*pair).reshape(*x.shape)
