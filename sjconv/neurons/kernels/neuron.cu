/* The fused neuron kernels of sjconv (docs/methods.md), read by sjconv/neurons/kernels/cupy_backend.py
   when a module is built, and compiled for the host by tests/host_kernel.py. */
typedef unsigned short u16;

/* Float32 arithmetic and comparisons, rounded to nearest and never flushing subnormals.
   CuPy compiles with -ftz=true (and -ftz=false after it does not undo that), which would turn
   a + b, __fadd_rn and a < b into .ftz instructions: a subnormal potential would read as 0 and
   the spikes differ from the torch backend. Inline PTX is emitted as written, so the device
   code has no .ftz; the host fallback is what tests compile with g++ (-ffp-contract=off). */
#ifdef __CUDA_ARCH__
#define SJ_BINARY(name, op) __device__ __forceinline__ float name(float a, float b) { \
  float r; asm(op " %0, %1, %2;" : "=f"(r) : "f"(a), "f"(b)); return r; }
#define SJ_COMPARE(name, cmp) __device__ __forceinline__ bool name(float a, float b) { \
  unsigned int r; asm("{ .reg .pred p; setp." cmp ".f32 p, %1, %2; selp.u32 %0, 1, 0, p; }" \
                      : "=r"(r) : "f"(a), "f"(b)); return r != 0; }
SJ_BINARY(sj_add, "add.rn.f32") SJ_BINARY(sj_sub, "sub.rn.f32") SJ_BINARY(sj_mul, "mul.rn.f32")
SJ_COMPARE(sj_ge, "ge") SJ_COMPARE(sj_gt, "gt") SJ_COMPARE(sj_lt, "lt") SJ_COMPARE(sj_le, "le")
__device__ __forceinline__ float sj_neg(float a) { float r; asm("neg.f32 %0, %1;" : "=f"(r) : "f"(a)); return r; }
__device__ __forceinline__ float sj_h2f(u16 h) { float f; asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h)); return f; }
__device__ __forceinline__ u16 sj_f2h(float f) { u16 h; asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f)); return h; }
__device__ __forceinline__ float sj_bits2f(unsigned int u) { return __uint_as_float(u); }
__device__ __forceinline__ unsigned int sj_f2bits(float f) { return __float_as_uint(f); }
#else   /* host fallback (tests): sj_h2f, sj_f2h, sj_bits2f and sj_f2bits come from the includer */
static inline float sj_add(float a, float b) { return a + b; }
static inline float sj_sub(float a, float b) { return a - b; }
static inline float sj_mul(float a, float b) { return a * b; }
static inline bool sj_ge(float a, float b) { return a >= b; }
static inline bool sj_gt(float a, float b) { return a > b; }
static inline bool sj_lt(float a, float b) { return a < b; }
static inline bool sj_le(float a, float b) { return a <= b; }
static inline float sj_neg(float a) { return -a; }
#endif

/* Storage formats: load to float32, store a float32 rounded to nearest even. */
struct F32 { typedef float T;
  static __device__ __forceinline__ float load(const float* p, long long i) { return p[i]; }
  static __device__ __forceinline__ void store(float* p, long long i, float f) { p[i] = f; } };

struct F16 { typedef u16 T;
  static __device__ __forceinline__ float load(const u16* p, long long i) { return sj_h2f(p[i]); }
  static __device__ __forceinline__ void store(u16* p, long long i, float f) { p[i] = sj_f2h(f); } };

struct BF16 { typedef u16 T;
  static __device__ __forceinline__ float load(const u16* p, long long i) {
    return sj_bits2f(((unsigned int)p[i]) << 16); }
  static __device__ __forceinline__ void store(u16* p, long long i, float f) {
    unsigned int u = sj_f2bits(f);                 /* round to nearest even (f is finite) */
    u += 0x7FFFu + ((u >> 16) & 1u);
    p[i] = (u16)(u >> 16); } };

/* One thread per neuron, all steps. Variants are template parameters: the storage format D and
   the flags SIGNED (negative spikes), MASKED (SRP output mask) and SNM (negative rule v <= -θ). */
template <typename D, bool SIGNED, bool MASKED, bool SNM>
__global__ void sjconv_neuron(const typename D::T* __restrict__ x, typename D::T* __restrict__ out,
                              float* __restrict__ v, float* __restrict__ count,
                              const unsigned char* __restrict__ mask,
                              const long long n, const int steps, const long long x_step,
                              const long long out_step, const float theta) {
  const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const float neg_theta = sj_neg(theta);
  float vi = v[i];
  float ci = SIGNED ? count[i] : 0.0f;
  const bool keep = MASKED ? (mask[i] != 0) : true;
  #pragma unroll 4
  for (int t = 0; t < steps; ++t) {
    vi = sj_add(vi, D::load(x, t * x_step + i));
    float s = 0.0f;
    if (sj_ge(vi, theta)) {
      s = 1.0f;
    } else if (SIGNED && sj_gt(ci, 0.0f) && (SNM ? sj_le(vi, neg_theta) : sj_lt(vi, 0.0f))) {
      s = -1.0f;
    }
    vi = sj_sub(vi, sj_mul(theta, s));
    if (SIGNED) ci = sj_add(ci, s);
    D::store(out, t * out_step + i, keep ? sj_mul(s, theta) : 0.0f);
  }
  v[i] = vi;
  if (SIGNED) count[i] = ci;
}

template <typename D, bool SIGNED, bool MASKED, bool SNM>
__global__ void sjconv_group_neuron(const typename D::T* __restrict__ x, typename D::T* __restrict__ out,
                                    float* __restrict__ v, float* __restrict__ count,
                                    const unsigned char* __restrict__ mask,
                                    const long long n, const int steps, const long long x_step,
                                    const long long out_step, const float q, const int levels) {
  const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) { return; }
  float vi = v[i];
  float ci = SIGNED ? count[i] : 0.0f;
  const bool keep = MASKED ? (mask[i] != 0) : true;
  for (int t = 0; t < steps; ++t) {
    vi = sj_add(vi, D::load(x, t * x_step + i));
    int k = 0;                                         /* members j with v >= j·q */
    while (k < levels && sj_ge(vi, sj_mul((float)(k + 1), q))) ++k;
    if (SIGNED && k == 0) {                            /* members j with v below -(j-1)·q (SNM: <= -j·q), c >= j */
      int back = 0;
      while (back < levels && sj_le((float)(back + 1), ci) &&
             (SNM ? sj_le(vi, sj_neg(sj_mul((float)(back + 1), q))) : sj_lt(vi, sj_neg(sj_mul((float)back, q))))) ++back;
      k = -back;
    }
    const float s = (float)k;
    const float kq = sj_mul(s, q);
    vi = sj_sub(vi, kq);
    if (SIGNED) ci = sj_add(ci, s);
    D::store(out, t * out_step + i, keep ? kq : 0.0f);
  }
  v[i] = vi;      /* the state, for the next call */
  if (SIGNED) count[i] = ci;
}
