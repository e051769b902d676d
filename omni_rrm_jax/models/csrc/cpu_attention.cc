// Fused softmax attention for XLA:CPU: forward and backward as XLA FFI handlers.
//
// Why: in XLA ops, attention on CPU is a chain of separate passes over the
// [rows, heads, T, S] logits (product, scale, mask, max, exp, sum, divide,
// product, and as many again in the backward), each streaming its operands
// through memory and each a separate op for the runtime to schedule. Here one
// pass over a tile of query rows does all of it while the tile's logits are
// in cache: the logits of kRows query rows against the keys they may see are
// computed into a small per-thread buffer, normalised there, and multiplied
// into the values before the next tile starts. The backward recomputes a
// tile's probabilities from the row maxima and sums the forward kept, so
// nothing of size T x S is ever stored; per thread the scratch is the tile's
// [kRows, S] logits and one key/value head's keys and values (repacked).
//
// Arithmetic (that of models/attention.py's reference, to float rounding):
// float32 logits times `scale`, masked keys excluded (the reference gives them
// the smallest float, whose exp is 0), softmax in float32, its gradient
// dlogits = p * (dp - sum_s p * dp) * scale with sum_s p * dp = dout . out.
// A query row without any allowed key gets the mean of all values (the
// reference's softmax over equal logits), and its logits no gradient.
//
// Layouts (row-major): q, dq [B, T, H, D]; k, v, dk, dv [B, S, K, D] (query
// head h reads key/value head h / (H / K)); mask bool [B or 1, T, S]; stats
// [B, T, H, 2], the row maximum and the sum of exp(logit - maximum). Inputs
// are float32 (the Python wrapper converts other dtypes).
//
// Work is split into tasks of (row, key/value head, block of query tiles) and
// run on the intra-op thread pool XLA hands to FFI handlers, the calling
// thread taking tasks as well. Vector code uses GCC's vector extensions on
// 16-float vectors (one AVX-512 register; split into two AVX or four SSE
// registers by the compiler where narrower).

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <memory>
#include <thread>
#include <utility>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

constexpr int kLanes = 16;  // floats in a Vec
constexpr int kRows = 8;    // query rows of a tile
constexpr int kMaxVecs = 8;  // head dims up to 8 x 16 = 128

typedef float Vec __attribute__((vector_size(64)));
typedef int32_t IVec __attribute__((vector_size(64)));

inline Vec Load(const float* p) {
  Vec v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

inline void Store(float* p, Vec v) { std::memcpy(p, &v, sizeof(v)); }

inline Vec Splat(float x) { return Vec{} + x; }

// Horizontal max / sum by halving: each lane meets the lane 8, 4, 2, then 1
// away (lane shuffles, not 15 scalar steps).
inline Vec Swap8(Vec v) {
  return __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15, 0, 1, 2, 3, 4, 5, 6, 7);
}
inline Vec Swap4(Vec v) {
  return __builtin_shufflevector(v, v, 4, 5, 6, 7, 0, 1, 2, 3, 12, 13, 14, 15, 8, 9, 10, 11);
}
inline Vec Swap2(Vec v) {
  return __builtin_shufflevector(v, v, 2, 3, 0, 1, 6, 7, 4, 5, 10, 11, 8, 9, 14, 15, 12, 13);
}
inline Vec Swap1(Vec v) {
  return __builtin_shufflevector(v, v, 1, 0, 3, 2, 5, 4, 7, 6, 9, 8, 11, 10, 13, 12, 15, 14);
}
inline Vec Max(Vec a, Vec b) { return a > b ? a : b; }

inline float MaxLanes(Vec v) {
  v = Max(v, Swap8(v));
  v = Max(v, Swap4(v));
  v = Max(v, Swap2(v));
  return Max(v, Swap1(v))[0];
}

inline float SumLanes(Vec v) {
  v += Swap8(v);
  v += Swap4(v);
  v += Swap2(v);
  return (v + Swap1(v))[0];
}

// exp(x) for x <= 0 (x - row maximum), to about one ulp; 0 below -87 (the
// result would be subnormal) and for -inf. x = n ln2 + r with |r| <= ln2 / 2,
// exp(r) by a degree-7 polynomial (minimax coefficients of the classic
// single-precision expf), 2^n put into the exponent bits.
inline Vec Exp(Vec x) {
  const Vec lo = Splat(-87.f);
  const IVec keep = x >= lo;
  x = x >= lo ? x : lo;
  const float shifter = 12582912.f;  // 1.5 * 2^23: adding it rounds to an integer
  Vec n = x * 1.44269504088896341f + shifter;
  n -= shifter;
  Vec r = x - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  Vec p = Splat(1.9875691500e-4f);
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * (r * r) + r + 1.f;
  const IVec bits = (__builtin_convertvector(n, IVec) + 127) << 23;
  return keep ? p * (Vec)bits : Splat(0.f);
}

const IVec kLane = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};

// Which of the 16 keys from `c` a mask row allows (lanes of -1 / 0); keys at
// and past `s` are not allowed. The 0 / 1 bytes become the bits of a 16-bit
// number (a multiply gathers the low bits of 8 bytes into the top byte), each
// lane then tests its own bit.
inline IVec Allowed(const bool* mask_row, int64_t c, int64_t s) {
  uint64_t word[2] = {0, 0};
  if (s - c >= kLanes) {
    std::memcpy(word, mask_row + c, kLanes);
  } else {
    std::memcpy(word, mask_row + c, static_cast<size_t>(s - c));
  }
  const uint64_t gather = 0x0102040810204080ull;
  const int32_t bits = static_cast<int32_t>((word[0] * gather) >> 56 |
                                            ((word[1] * gather) >> 56) << 8);
  return ((IVec{} + bits) & (IVec{} + 1) << kLane) != 0;
}

// Keys [c, c + 16) within [lo, hi).
inline IVec InRange(int64_t c, int64_t lo, int64_t hi) {
  const IVec key = kLane + static_cast<int32_t>(c);
  return (key >= static_cast<int32_t>(lo)) & (key < static_cast<int32_t>(hi));
}

// The last allowed key of a mask row + 1, scanning 8 bytes at a time from the
// end; `first` is known to be allowed.
inline int64_t EndOfAllowed(const bool* row, int64_t first, int64_t s) {
  int64_t j = s;
  while (j - 8 >= first) {
    uint64_t word;
    std::memcpy(&word, row + j - 8, 8);
    if (word != 0) break;
    j -= 8;
  }
  while (!row[j - 1]) --j;
  return j;
}

// A float buffer of at least n elements, 64-byte aligned, kept per thread.
float* Scratch(std::vector<float>& buffer, size_t n) {
  if (buffer.size() < n + kLanes) buffer.resize(n + kLanes);
  const uintptr_t at = reinterpret_cast<uintptr_t>(buffer.data());
  return buffer.data() + ((64 - at % 64) % 64) / sizeof(float);
}

// fn(i) for i in [0, n) on XLA's intra-op pool and the calling thread.
// Helpers take indices from a shared counter; the caller takes them too, so
// nothing waits on a helper that never started (a busy or one-thread pool),
// and waits at the end only for the tasks still running. Helpers that start
// after all indices are taken return at once; the state they read is shared.
void ParallelFor(ffi::ThreadPool& pool, int64_t n, const std::function<void(int64_t)>& fn) {
  struct State {
    std::atomic<int64_t> next{0};
    std::atomic<int64_t> done{0};
    int64_t n = 0;
    const std::function<void(int64_t)>* fn = nullptr;
  };
  auto state = std::make_shared<State>();
  state->n = n;
  state->fn = &fn;
  auto work = [state]() {
    for (;;) {
      const int64_t i = state->next.fetch_add(1, std::memory_order_relaxed);
      if (i >= state->n) return;
      (*state->fn)(i);
      state->done.fetch_add(1, std::memory_order_release);
    }
  };
  const int64_t helpers = std::min<int64_t>(pool.num_threads(), n - 1);
  for (int64_t i = 0; i < helpers; ++i) pool.Schedule(decltype(work)(work));
  work();
  while (state->done.load(std::memory_order_acquire) < n) std::this_thread::yield();
}

// A query row allows keys [lo, hi) and no others (causal, padding and window
// masks), or only some of [lo, hi) (its mask is read), or none (it attends to
// every key with equal logits, as the reference's softmax over masked logits
// does), or it is past the unit's last row.
enum RowKind { kRange, kMasked, kEmpty, kPad };

struct RowRange {
  int64_t lo, hi;
  RowKind kind;
};

RowRange ScanMaskRow(const bool* row, int64_t s) {
  const void* first = std::memchr(row, 1, static_cast<size_t>(s));
  if (first == nullptr) return {0, s, kEmpty};
  const int64_t lo = static_cast<const bool*>(first) - row;
  const int64_t hi = EndOfAllowed(row, lo, s);
  const bool holes = std::memchr(row + lo, 0, static_cast<size_t>(hi - lo)) != nullptr;
  return {lo, hi, holes ? kMasked : kRange};
}

// One call's shapes and operands.
struct Problem {
  int64_t b, t, s, h, k, d, g, mask_rows;
  int64_t rows;        // query rows of a (row, key/value head) unit: T * G, t-major
  int64_t tiles;       // tiles of kRows query rows in a unit
  int64_t chunks;      // blocks of tiles a unit's work is split into
  int64_t s_pad;       // S rounded up to kLanes
  float scale;
  const float* q;
  const float* key;
  const float* value;
  const bool* mask;
  const RowRange* ranges;  // of the mask's rows, [B or 1, T]

  int64_t units() const { return b * k; }
  int64_t tasks() const { return units() * chunks; }
  int64_t tiles_per_chunk() const { return (tiles + chunks - 1) / chunks; }
  // Offset of query row r of unit (row bi, key/value head kh) in [B, T, H, *].
  int64_t row_index(int64_t bi, int64_t kh, int64_t r) const {
    return (bi * t + r / g) * h + kh * g + r % g;
  }
  // Row of query row r of a unit of row bi in the mask [B or 1, T, S].
  int64_t mask_index(int64_t bi, int64_t r) const {
    return (mask_rows == 1 ? 0 : bi) * t + r / g;
  }
};

// The query rows of one tile and the keys [c0, c1) (whole vectors) it covers.
struct Tile {
  RowKind kind[kRows];
  int64_t lo[kRows], hi[kRows];
  const bool* mask[kRows];
  int64_t c0, c1;
};

Tile SetUpTile(const Problem& p, int64_t bi, int64_t r0) {
  Tile tile;
  int64_t lo = p.s, hi = 0;
  for (int i = 0; i < kRows; ++i) {
    const int64_t r = r0 + i;
    if (r >= p.rows) {
      tile.kind[i] = kPad;
      tile.lo[i] = tile.hi[i] = 0;
      tile.mask[i] = nullptr;
      continue;
    }
    const int64_t at = p.mask_index(bi, r);
    const RowRange& range = p.ranges[at];
    tile.kind[i] = range.kind;
    tile.lo[i] = range.lo;
    tile.hi[i] = range.hi;
    tile.mask[i] = p.mask + at * p.s;
    lo = std::min(lo, range.lo);
    hi = std::max(hi, range.hi);
  }
  tile.c0 = lo / kLanes * kLanes;
  tile.c1 = (hi + kLanes - 1) / kLanes * kLanes;
  return tile;
}

// n floats (a head's D) from src to dst, whole vectors first.
inline void Copy(const float* src, int64_t n, float* dst) {
  int64_t e = 0;
  for (; e + kLanes <= n; e += kLanes) Store(dst + e, Load(src + e));
  for (; e < n; ++e) dst[e] = src[e];
}

// The n <= 16 floats at p as a vector, zeros after them.
inline Vec LoadPart(const float* p, int64_t n) {
  if (n >= kLanes) return Load(p);
  float part[kLanes] = {};
  for (int64_t e = 0; e < n; ++e) part[e] = p[e];
  return Load(part);
}

// Rows [r0, r0 + kRows) of a [.., D] operand into `out` [kRows, dp], zero
// padded (past D and past the unit's rows).
void PackRows(const Problem& p, const float* x, int64_t bi, int64_t kh, int64_t r0, int dp,
              float* out) {
  for (int i = 0; i < kRows; ++i) {
    float* dst = out + i * dp;
    std::fill(dst, dst + dp, 0.f);
    if (r0 + i < p.rows) Copy(x + p.row_index(bi, kh, r0 + i) * p.d, p.d, dst);
  }
}

// One key/value head's keys or values as [D, S_pad] (the logits' product
// reads 16 consecutive keys of one dimension) and, if `rows`, as [S_pad, dp]
// (the products along the head dimension read whole keys).
void PackHead(const Problem& p, const float* x, int64_t bi, int64_t kh, int dp,
              float* transposed, float* rows) {
  const float* base = x + (bi * p.s * p.k + kh) * p.d;
  const int64_t stride = p.k * p.d;
  if (transposed != nullptr) {
    for (int64_t e = 0; e < p.d; ++e) {
      float* dst = transposed + e * p.s_pad;
      for (int64_t j = 0; j < p.s; ++j) dst[j] = base[j * stride + e];
      std::fill(dst + p.s, dst + p.s_pad, 0.f);
    }
  }
  if (rows != nullptr) {
    for (int64_t j = 0; j < p.s_pad; ++j) {
      float* dst = rows + j * dp;
      std::fill(dst, dst + dp, 0.f);
      if (j < p.s) Copy(base + j * stride, p.d, dst);
    }
  }
}

// acc[i] = x_i . y[:, c:c + 16] for the tile's rows x [kRows, dp] and y
// [D, S_pad] shifted to key c.
inline void DotChunk(const float* x, int dp, const float* y, int64_t s_pad, int64_t d,
                     Vec acc[kRows]) {
#pragma GCC unroll 8
  for (int i = 0; i < kRows; ++i) acc[i] = Vec{};
  for (int64_t e = 0; e < d; ++e) {
    const Vec ye = Load(y + e * s_pad);
#pragma GCC unroll 8
    for (int i = 0; i < kRows; ++i) acc[i] += x[i * dp + e] * ye;
  }
}

// The tile's masked, scaled logits of keys [c, c + 16).
inline void MaskLogits(const Problem& p, const Tile& tile, int64_t c, Vec acc[kRows]) {
  const Vec neg_inf = Splat(-std::numeric_limits<float>::infinity());
  for (int i = 0; i < kRows; ++i) {
    switch (tile.kind[i]) {
      case kRange:
        if (c >= tile.lo[i] && c + kLanes <= tile.hi[i]) {
          acc[i] *= p.scale;
        } else {
          acc[i] = InRange(c, tile.lo[i], tile.hi[i]) ? acc[i] * p.scale : neg_inf;
        }
        break;
      case kMasked:
        acc[i] = Allowed(tile.mask[i], c, p.s) ? acc[i] * p.scale : neg_inf;
        break;
      case kEmpty:
        acc[i] = InRange(c, 0, p.s) ? Splat(0.f) : neg_inf;
        break;
      case kPad:
        acc[i] = neg_inf;
        break;
    }
  }
}

// Per-thread scratch.
struct Buffers {
  std::vector<float> keys_t, values_t, keys, values, q, dout, probs, dlogits, dk, dv;
};
thread_local Buffers buffers;

template <int DV>
struct Kernel {
  static constexpr int kDp = DV * kLanes;  // padded head dimension
  // Query rows whose [rows, D] accumulators stay in registers along the keys.
  static constexpr int kSub = DV == 1 ? 8 : DV == 2 ? 8 : DV <= 4 ? 4 : 2;
  static_assert(kRows % kSub == 0, "sub-tiles split a tile");

  // acc[rr] += sum_j w[rr][j] * x[j] over keys [c0, end) for rows r0.. of a
  // tile; w [kRows, ls] starts at key c0, x [S_pad, kDp].
  static void WeightedRows(const float* w, int64_t ls, const float* x, int64_t c0, int64_t end,
                           int r0, Vec acc[kSub][DV]) {
    for (int rr = 0; rr < kSub; ++rr)
      for (int v = 0; v < DV; ++v) acc[rr][v] = Vec{};
    for (int64_t j = c0; j < end; ++j) {
      Vec xj[DV];
      for (int v = 0; v < DV; ++v) xj[v] = Load(x + j * kDp + v * kLanes);
#pragma GCC unroll 8
      for (int rr = 0; rr < kSub; ++rr) {
        const float wj = w[(r0 + rr) * ls + (j - c0)];
        for (int v = 0; v < DV; ++v) acc[rr][v] += wj * xj[v];
      }
    }
  }

  static void StoreRow(const Problem& p, const Vec acc[DV], float factor, float* dst) {
    float row[kDp];
    for (int v = 0; v < DV; ++v) Store(row + v * kLanes, acc[v] * factor);
    Copy(row, p.d, dst);
  }

  static void Forward(const Problem& p, int64_t task, float* out, float* stats) {
    const int64_t unit = task / p.chunks, chunk = task % p.chunks;
    const int64_t bi = unit / p.k, kh = unit % p.k;
    const int64_t tile_lo = chunk * p.tiles_per_chunk();
    const int64_t tile_hi = std::min(p.tiles, tile_lo + p.tiles_per_chunk());
    if (tile_lo >= tile_hi) return;
    Buffers& buf = buffers;
    float* keys_t = Scratch(buf.keys_t, p.d * p.s_pad);
    float* values = Scratch(buf.values, p.s_pad * kDp);
    float* q = Scratch(buf.q, kRows * kDp);
    const int64_t ls = p.s_pad;
    float* probs = Scratch(buf.probs, kRows * ls);
    PackHead(p, p.key, bi, kh, kDp, keys_t, nullptr);
    PackHead(p, p.value, bi, kh, kDp, nullptr, values);

    for (int64_t tile_index = tile_lo; tile_index < tile_hi; ++tile_index) {
      const int64_t r0 = tile_index * kRows;
      const Tile tile = SetUpTile(p, bi, r0);
      PackRows(p, p.q, bi, kh, r0, kDp, q);
      // Logits and their running maxima, lane by lane.
      const Vec neg_inf = Splat(-std::numeric_limits<float>::infinity());
      Vec max_lanes[kRows];
      for (int i = 0; i < kRows; ++i) max_lanes[i] = neg_inf;
      for (int64_t c = tile.c0; c < tile.c1; c += kLanes) {
        Vec acc[kRows];
        DotChunk(q, kDp, keys_t + c, p.s_pad, p.d, acc);
        MaskLogits(p, tile, c, acc);
        for (int i = 0; i < kRows; ++i) {
          max_lanes[i] = Max(max_lanes[i], acc[i]);
          Store(probs + i * ls + (c - tile.c0), acc[i]);
        }
      }
      // exp(logit - maximum) in place, and the sums.
      float row_max[kRows], inv_sum[kRows];
      for (int i = 0; i < kRows; ++i) {
        row_max[i] = tile.kind[i] == kPad ? 0.f : MaxLanes(max_lanes[i]);
        Vec sum = Vec{};
        float* pi = probs + i * ls;
        for (int64_t c = tile.c0; c < tile.c1; c += kLanes) {
          const Vec e = Exp(Load(pi + (c - tile.c0)) - row_max[i]);
          Store(pi + (c - tile.c0), e);
          sum += e;
        }
        const float total = SumLanes(sum);
        inv_sum[i] = total > 0.f ? 1.f / total : 0.f;
        if (tile.kind[i] != kPad) {
          float* st = stats + p.row_index(bi, kh, r0 + i) * 2;
          st[0] = row_max[i];
          st[1] = total;
        }
      }
      // The values weighted by the unnormalised probabilities, then divided.
      const int64_t end = std::min(tile.c1, p.s);
      for (int r = 0; r < kRows; r += kSub) {
        Vec acc[kSub][DV];
        WeightedRows(probs, ls, values, tile.c0, end, r, acc);
        for (int rr = 0; rr < kSub; ++rr) {
          if (tile.kind[r + rr] == kPad) continue;
          StoreRow(p, acc[rr], inv_sum[r + rr], out + p.row_index(bi, kh, r0 + r + rr) * p.d);
        }
      }
    }
  }

  // dq of the task's rows; its keys' and values' gradients summed over its
  // rows into dk_dst / dv_dst, [S, D] rows `dst_stride` apart (the unit's in
  // [B, S, K, D], or this task's partial sums when a unit is split in chunks).
  static void Backward(const Problem& p, int64_t task, const float* out, const float* stats,
                       const float* dout, float* dq, float* dk_dst, float* dv_dst,
                       int64_t dst_stride) {
    const int64_t unit = task / p.chunks, chunk = task % p.chunks;
    const int64_t bi = unit / p.k, kh = unit % p.k;
    const int64_t tile_lo = chunk * p.tiles_per_chunk();
    const int64_t tile_hi = std::min(p.tiles, tile_lo + p.tiles_per_chunk());
    Buffers& buf = buffers;
    float* keys_t = Scratch(buf.keys_t, p.d * p.s_pad);
    float* values_t = Scratch(buf.values_t, p.d * p.s_pad);
    float* keys = Scratch(buf.keys, p.s_pad * kDp);
    float* q = Scratch(buf.q, kRows * kDp);
    float* dout_tile = Scratch(buf.dout, kRows * kDp);
    const int64_t ls = p.s_pad;
    float* dlogits = Scratch(buf.dlogits, kRows * ls);
    // The key and value gradients transposed, [D, S_pad]: a tile adds to 16
    // keys of one dimension at a time, as its probabilities come.
    float* dk_t = Scratch(buf.dk, p.d * p.s_pad);
    float* dv_t = Scratch(buf.dv, p.d * p.s_pad);
    std::fill(dk_t, dk_t + p.d * p.s_pad, 0.f);
    std::fill(dv_t, dv_t + p.d * p.s_pad, 0.f);
    if (tile_lo < tile_hi) {
      PackHead(p, p.key, bi, kh, kDp, keys_t, keys);
      PackHead(p, p.value, bi, kh, kDp, values_t, nullptr);
    }

    for (int64_t tile_index = tile_lo; tile_index < tile_hi; ++tile_index) {
      const int64_t r0 = tile_index * kRows;
      const Tile tile = SetUpTile(p, bi, r0);
      PackRows(p, p.q, bi, kh, r0, kDp, q);
      PackRows(p, dout, bi, kh, r0, kDp, dout_tile);
      // Per row: the forward's maximum and 1 / sum, and dout . out.
      float row_max[kRows], inv_sum[kRows], row_dot[kRows];
      for (int i = 0; i < kRows; ++i) {
        row_max[i] = inv_sum[i] = row_dot[i] = 0.f;
        if (tile.kind[i] == kPad) continue;
        const int64_t at = p.row_index(bi, kh, r0 + i);
        row_max[i] = stats[at * 2];
        inv_sum[i] = 1.f / stats[at * 2 + 1];
        const float* oi = out + at * p.d;
        Vec dot = Vec{};
        for (int v = 0; v < DV; ++v) {
          dot += Load(dout_tile + i * kDp + v * kLanes) *
                 LoadPart(oi + v * kLanes, p.d - v * kLanes);
        }
        row_dot[i] = SumLanes(dot);
      }
      for (int64_t c = tile.c0; c < tile.c1; c += kLanes) {
        // The probabilities and the logits' gradients (scale included) ...
        Vec probs[kRows], dlogit[kRows];
        DotChunk(q, kDp, keys_t + c, p.s_pad, p.d, probs);
        DotChunk(dout_tile, kDp, values_t + c, p.s_pad, p.d, dlogit);
        MaskLogits(p, tile, c, probs);
        for (int i = 0; i < kRows; ++i) {
          probs[i] = Exp(probs[i] - row_max[i]) * inv_sum[i];
          dlogit[i] = tile.kind[i] <= kMasked ? probs[i] * (dlogit[i] - row_dot[i]) * p.scale
                                              : Vec{};
          Store(dlogits + i * ls + (c - tile.c0), dlogit[i]);
        }
        // ... into dk += dlogits^T . q and dv += probs^T . dout.
        for (int64_t e = 0; e < p.d; ++e) {
          Vec dk = Load(dk_t + e * p.s_pad + c), dv = Load(dv_t + e * p.s_pad + c);
#pragma GCC unroll 8
          for (int i = 0; i < kRows; ++i) {
            dk += q[i * kDp + e] * dlogit[i];
            dv += dout_tile[i * kDp + e] * probs[i];
          }
          Store(dk_t + e * p.s_pad + c, dk);
          Store(dv_t + e * p.s_pad + c, dv);
        }
      }
      // dq = dlogits . keys.
      const int64_t end = std::min(tile.c1, p.s);
      for (int r = 0; r < kRows; r += kSub) {
        Vec acc[kSub][DV];
        WeightedRows(dlogits, ls, keys, tile.c0, end, r, acc);
        for (int rr = 0; rr < kSub; ++rr) {
          if (tile.kind[r + rr] == kPad) continue;
          StoreRow(p, acc[rr], 1.f, dq + p.row_index(bi, kh, r0 + r + rr) * p.d);
        }
      }
    }
    for (int64_t j = 0; j < p.s; ++j) {
      float* dkj = dk_dst + j * dst_stride;
      float* dvj = dv_dst + j * dst_stride;
      for (int64_t e = 0; e < p.d; ++e) {
        dkj[e] = dk_t[e * p.s_pad + j];
        dvj[e] = dv_t[e * p.s_pad + j];
      }
    }
  }
};

// Blocks of query tiles per (row, key/value head) unit: enough tasks for
// about four per thread, so that uneven tasks (causal rows) still balance.
int64_t ChunksFor(int64_t units, int64_t tiles, int64_t threads) {
  const int64_t want = 4 * std::max<int64_t>(threads, 1);
  if (units >= want) return 1;
  return std::clamp<int64_t>((want + units - 1) / units, 1, tiles);
}

ffi::Error MakeProblem(ffi::Buffer<ffi::F32> q, ffi::Buffer<ffi::F32> key,
                       ffi::Buffer<ffi::F32> value, ffi::Buffer<ffi::PRED> mask, float scale,
                       Problem& p) {
  const auto qd = q.dimensions(), kd = key.dimensions(), vd = value.dimensions(),
             md = mask.dimensions();
  if (qd.size() != 4 || kd.size() != 4 || vd.size() != 4 || md.size() != 3)
    return ffi::Error::InvalidArgument("cpu attention: q, k, v must be 4-D and the mask 3-D");
  p.b = qd[0], p.t = qd[1], p.h = qd[2], p.d = qd[3];
  p.s = kd[1], p.k = kd[2];
  for (int i = 0; i < 4; ++i)
    if (kd[i] != vd[i])
      return ffi::Error::InvalidArgument("cpu attention: keys and values differ in shape");
  if (kd[0] != p.b || kd[3] != p.d || p.k == 0 || p.h % p.k != 0)
    return ffi::Error::InvalidArgument(
        "cpu attention: keys must be [B, S, K, D] with K dividing the query heads");
  if ((md[0] != 1 && md[0] != p.b) || md[1] != p.t || md[2] != p.s)
    return ffi::Error::InvalidArgument("cpu attention: the mask must be [B or 1, T, S]");
  if (p.d < 1 || p.d > kMaxVecs * kLanes)
    return ffi::Error::InvalidArgument("cpu attention: head dims from 1 to 128");
  if (p.s >= (int64_t{1} << 30))
    return ffi::Error::InvalidArgument("cpu attention: too many keys");
  p.g = p.h / p.k;
  p.mask_rows = md[0];
  p.rows = p.t * p.g;
  p.tiles = (p.rows + kRows - 1) / kRows;
  p.s_pad = (p.s + kLanes - 1) / kLanes * kLanes;
  p.scale = scale;
  p.q = q.typed_data();
  p.key = key.typed_data();
  p.value = value.typed_data();
  p.mask = mask.typed_data();
  return ffi::Error::Success();
}

template <template <int> class Fn, typename... Args>
void Dispatch(int64_t d, Args&&... args) {
  switch ((d + kLanes - 1) / kLanes) {
    case 1: Fn<1>::Run(std::forward<Args>(args)...); break;
    case 2: Fn<2>::Run(std::forward<Args>(args)...); break;
    case 3: Fn<3>::Run(std::forward<Args>(args)...); break;
    case 4: Fn<4>::Run(std::forward<Args>(args)...); break;
    case 5: Fn<5>::Run(std::forward<Args>(args)...); break;
    case 6: Fn<6>::Run(std::forward<Args>(args)...); break;
    case 7: Fn<7>::Run(std::forward<Args>(args)...); break;
    default: Fn<8>::Run(std::forward<Args>(args)...); break;
  }
}

template <int DV>
struct RunForward {
  static void Run(ffi::ThreadPool& pool, const Problem& p, float* out, float* stats) {
    if (p.b * p.t * p.h == 0) return;
    ParallelFor(pool, p.tasks(),
                [&](int64_t task) { Kernel<DV>::Forward(p, task, out, stats); });
  }
};

template <int DV>
struct RunBackward {
  static void Run(ffi::ThreadPool& pool, const Problem& p, const float* out,
                  const float* stats, const float* dout, float* dq, float* dk, float* dv) {
    const int64_t kd = p.k * p.d;
    if (p.chunks == 1) {  // each task owns its unit's key and value gradients
      ParallelFor(pool, p.tasks(), [&](int64_t task) {
        const int64_t at = (task / p.k * p.s * p.k + task % p.k) * p.d;
        Kernel<DV>::Backward(p, task, out, stats, dout, dq, dk + at, dv + at, kd);
      });
      return;
    }
    // Each task's partial sums [S, D], then per unit their sum.
    const int64_t part = p.s * p.d;
    std::vector<float> dk_parts(p.tasks() * part), dv_parts(p.tasks() * part);
    ParallelFor(pool, p.tasks(), [&](int64_t task) {
      Kernel<DV>::Backward(p, task, out, stats, dout, dq, dk_parts.data() + task * part,
                           dv_parts.data() + task * part, p.d);
    });
    ParallelFor(pool, p.units(), [&](int64_t unit) {
      const int64_t at = (unit / p.k * p.s * p.k + unit % p.k) * p.d;
      for (int64_t j = 0; j < p.s; ++j) {
        float* dkj = dk + at + j * kd;
        float* dvj = dv + at + j * kd;
        std::fill(dkj, dkj + p.d, 0.f);
        std::fill(dvj, dvj + p.d, 0.f);
        for (int64_t c = 0; c < p.chunks; ++c) {
          const float* sk = dk_parts.data() + (unit * p.chunks + c) * part + j * p.d;
          const float* sv = dv_parts.data() + (unit * p.chunks + c) * part + j * p.d;
          for (int64_t e = 0; e < p.d; ++e) {
            dkj[e] += sk[e];
            dvj[e] += sv[e];
          }
        }
      }
    });
  }
};

// Each mask row's range, once per call (a row serves K * G query rows), rows
// in blocks over the pool.
std::vector<RowRange> ScanMask(ffi::ThreadPool& pool, const Problem& p) {
  const int64_t n = p.mask_rows * p.t, block = 256;
  std::vector<RowRange> ranges(n);
  ParallelFor(pool, (n + block - 1) / block, [&](int64_t i) {
    for (int64_t r = i * block; r < std::min(n, (i + 1) * block); ++r)
      ranges[r] = ScanMaskRow(p.mask + r * p.s, p.s);
  });
  return ranges;
}

ffi::Error ForwardImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> q, ffi::Buffer<ffi::F32> key,
                       ffi::Buffer<ffi::F32> value, ffi::Buffer<ffi::PRED> mask, float scale,
                       ffi::ResultBuffer<ffi::F32> out, ffi::ResultBuffer<ffi::F32> stats) {
  Problem p;
  if (ffi::Error error = MakeProblem(q, key, value, mask, scale, p); !error.success())
    return error;
  p.chunks = ChunksFor(p.units(), p.tiles, pool.num_threads() + 1);
  const std::vector<RowRange> ranges = ScanMask(pool, p);
  p.ranges = ranges.data();
  Dispatch<RunForward>(p.d, pool, p, out->typed_data(), stats->typed_data());
  return ffi::Error::Success();
}

ffi::Error BackwardImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> q,
                        ffi::Buffer<ffi::F32> key, ffi::Buffer<ffi::F32> value,
                        ffi::Buffer<ffi::PRED> mask, ffi::Buffer<ffi::F32> out,
                        ffi::Buffer<ffi::F32> stats, ffi::Buffer<ffi::F32> dout, float scale,
                        ffi::ResultBuffer<ffi::F32> dq, ffi::ResultBuffer<ffi::F32> dk,
                        ffi::ResultBuffer<ffi::F32> dv) {
  Problem p;
  if (ffi::Error error = MakeProblem(q, key, value, mask, scale, p); !error.success())
    return error;
  p.chunks = ChunksFor(p.units(), p.tiles, pool.num_threads() + 1);
  if (p.b * p.t * p.h == 0) {
    std::fill(dk->typed_data(), dk->typed_data() + dk->element_count(), 0.f);
    std::fill(dv->typed_data(), dv->typed_data() + dv->element_count(), 0.f);
    return ffi::Error::Success();
  }
  const std::vector<RowRange> ranges = ScanMask(pool, p);
  p.ranges = ranges.data();
  Dispatch<RunBackward>(p.d, pool, p, out.typed_data(), stats.typed_data(), dout.typed_data(),
                        dq->typed_data(), dk->typed_data(), dv->typed_data());
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(OmniRrmCpuAttentionForward, ForwardImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()   // q [B, T, H, D]
                                  .Arg<ffi::Buffer<ffi::F32>>()   // k [B, S, K, D]
                                  .Arg<ffi::Buffer<ffi::F32>>()   // v [B, S, K, D]
                                  .Arg<ffi::Buffer<ffi::PRED>>()  // mask [B or 1, T, S]
                                  .Attr<float>("scale")
                                  .Ret<ffi::Buffer<ffi::F32>>()   // out [B, T, H, D]
                                  .Ret<ffi::Buffer<ffi::F32>>()); // stats [B, T, H, 2]

XLA_FFI_DEFINE_HANDLER_SYMBOL(OmniRrmCpuAttentionBackward, BackwardImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()   // q
                                  .Arg<ffi::Buffer<ffi::F32>>()   // k
                                  .Arg<ffi::Buffer<ffi::F32>>()   // v
                                  .Arg<ffi::Buffer<ffi::PRED>>()  // mask
                                  .Arg<ffi::Buffer<ffi::F32>>()   // out (float32)
                                  .Arg<ffi::Buffer<ffi::F32>>()   // stats
                                  .Arg<ffi::Buffer<ffi::F32>>()   // dout
                                  .Attr<float>("scale")
                                  .Ret<ffi::Buffer<ffi::F32>>()   // dq
                                  .Ret<ffi::Buffer<ffi::F32>>()   // dk
                                  .Ret<ffi::Buffer<ffi::F32>>()); // dv
