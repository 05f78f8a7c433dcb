/* ops_elementwise_cast.c: the Cast/CastLike conversion table, one loop per
 * (source, destination) pair among the numeric types and bool, following the
 * conversion rules written in the Cast-19+ spec. */
#include <math.h>
#include <stdint.h>

#include "op.h"
#include "ops_elementwise.h"

/* X(DTYPE, suffix, C type, class): F float/double, H float16, B bfloat16,
 * I signed int, U unsigned int, L bool. Two copies of the list because a
 * macro cannot expand itself while it is being expanded. */
#define CAST_TYPES_A(X)                                                                          \
    X(FLOAT, f32, float, F) X(DOUBLE, f64, double, F) X(FLOAT16, f16, uint16_t, H)               \
    X(BFLOAT16, b16, uint16_t, B) X(INT8, i8, int8_t, I) X(INT16, i16, int16_t, I)               \
    X(INT32, i32, int32_t, I) X(INT64, i64, int64_t, I) X(UINT8, u8, uint8_t, U)                 \
    X(UINT16, u16, uint16_t, U) X(UINT32, u32, uint32_t, U) X(UINT64, u64, uint64_t, U)          \
    X(BOOL, bl, uint8_t, L)
#define CAST_TYPES_B(X)                                                                          \
    X(FLOAT, f32, float, F) X(DOUBLE, f64, double, F) X(FLOAT16, f16, uint16_t, H)               \
    X(BFLOAT16, b16, uint16_t, B) X(INT8, i8, int8_t, I) X(INT16, i16, int16_t, I)               \
    X(INT32, i32, int32_t, I) X(INT64, i64, int64_t, I) X(UINT8, u8, uint8_t, U)                 \
    X(UINT16, u16, uint16_t, U) X(UINT32, u32, uint32_t, U) X(UINT64, u64, uint64_t, U)          \
    X(BOOL, bl, uint8_t, L)

/* Float -> fixed point: the spec leaves out-of-range results undefined (and
 * C makes them UB), so truncate toward zero, saturate, and map NaN to 0. */
#define SAT_FN(name, T, LO, HI)                                                                  \
    static inline T name(double v) {                                                             \
        return v != v ? (T)0 : v <= (double)(LO) ? (T)(LO) : v >= (double)(HI) ? (T)(HI) : (T)v; \
    }
SAT_FN(sat_i8, int8_t, INT8_MIN, INT8_MAX)
SAT_FN(sat_i16, int16_t, INT16_MIN, INT16_MAX)
SAT_FN(sat_i32, int32_t, INT32_MIN, INT32_MAX)
SAT_FN(sat_i64, int64_t, INT64_MIN, INT64_MAX)
SAT_FN(sat_u8, uint8_t, 0, UINT8_MAX)
SAT_FN(sat_u16, uint16_t, 0, UINT16_MAX)
SAT_FN(sat_u32, uint32_t, 0, UINT32_MAX)
SAT_FN(sat_u64, uint64_t, 0, UINT64_MAX)

/* Loading a source element: half types widen to float; bool is != 0. */
#define LOAD_F(v) (v)
#define LOAD_H(v) oq_half_to_float(v)
#define LOAD_B(v) oq_bf16_to_float(v)
#define LOAD_I(v) (v)
#define LOAD_U(v) (v)
#define LOAD_L(v) ((v) != 0)
/* Whether the loaded value is floating (FL) or integral (IN). */
#define KIND_F FL
#define KIND_H FL
#define KIND_B FL
#define KIND_I IN
#define KIND_U IN
#define KIND_L IN

/* Storing into a destination class from a floating or integral value.
 * Fixed point -> fixed point keeps the low bits (two's complement wrap). */
#define STORE_FL_F(sfx, T, v) ((T)(v))
#define STORE_FL_H(sfx, T, v) oq_float_to_half((float)(v))
#define STORE_FL_B(sfx, T, v) oq_float_to_bf16((float)(v))
#define STORE_FL_I(sfx, T, v) sat_##sfx((double)(v))
#define STORE_FL_U(sfx, T, v) sat_##sfx((double)(v))
#define STORE_FL_L(sfx, T, v) ((T)((v) != 0))
#define STORE_IN_F(sfx, T, v) ((T)(v))
#define STORE_IN_H(sfx, T, v) oq_float_to_half((float)(v))
#define STORE_IN_B(sfx, T, v) oq_float_to_bf16((float)(v))
#define STORE_IN_I(sfx, T, v) ((T)(v))
#define STORE_IN_U(sfx, T, v) ((T)(v))
#define STORE_IN_L(sfx, T, v) ((T)((v) != 0))
#define STORE2(kind, dc, sfx, T, v) STORE_##kind##_##dc(sfx, T, v)
#define STORE(kind, dc, sfx, T, v) STORE2(kind, dc, sfx, T, v)

#define CAST_FN(sdt, ssfx, sT, sc, ddt, dsfx, dT, dc)                                            \
    static void cast_##ssfx##_##dsfx(const void *ps, void *pd, size_t n) {                       \
        const sT *restrict s = ps;                                                               \
        dT *restrict d = pd;                                                                     \
        for (size_t i = 0; i < n; i++)                                                           \
            d[i] = STORE(KIND_##sc, dc, dsfx, dT, LOAD_##sc(s[i]));                              \
    }

#define CAST_ROW_FNS(sdt, ssfx, sT, sc) CAST_TYPES_B(CAST_FN_FROM_##ssfx)
/* One helper per source type binding the source half of CAST_FN. */
#define CAST_FN_FROM(ssfx, sT, sc, ddt, dsfx, dT, dc) CAST_FN(x, ssfx, sT, sc, ddt, dsfx, dT, dc)
#define CAST_FN_FROM_f32(ddt, dsfx, dT, dc) CAST_FN_FROM(f32, float, F, ddt, dsfx, dT, dc)
#define CAST_FN_FROM_f64(ddt, dsfx, dT, dc) CAST_FN_FROM(f64, double, F, ddt, dsfx, dT, dc)
#define CAST_FN_FROM_f16(ddt, dsfx, dT, dc) CAST_FN_FROM(f16, uint16_t, H, ddt, dsfx, dT, dc)
#define CAST_FN_FROM_b16(ddt, dsfx, dT, dc) CAST_FN_FROM(b16, uint16_t, B, ddt, dsfx, dT, dc)
#define CAST_FN_FROM_i8(ddt, dsfx, dT, dc) CAST_FN_FROM(i8, int8_t, I, ddt, dsfx, dT, dc)
#define CAST_FN_FROM_i16(ddt, dsfx, dT, dc) CAST_FN_FROM(i16, int16_t, I, ddt, dsfx, dT, dc)
#define CAST_FN_FROM_i32(ddt, dsfx, dT, dc) CAST_FN_FROM(i32, int32_t, I, ddt, dsfx, dT, dc)
#define CAST_FN_FROM_i64(ddt, dsfx, dT, dc) CAST_FN_FROM(i64, int64_t, I, ddt, dsfx, dT, dc)
#define CAST_FN_FROM_u8(ddt, dsfx, dT, dc) CAST_FN_FROM(u8, uint8_t, U, ddt, dsfx, dT, dc)
#define CAST_FN_FROM_u16(ddt, dsfx, dT, dc) CAST_FN_FROM(u16, uint16_t, U, ddt, dsfx, dT, dc)
#define CAST_FN_FROM_u32(ddt, dsfx, dT, dc) CAST_FN_FROM(u32, uint32_t, U, ddt, dsfx, dT, dc)
#define CAST_FN_FROM_u64(ddt, dsfx, dT, dc) CAST_FN_FROM(u64, uint64_t, U, ddt, dsfx, dT, dc)
#define CAST_FN_FROM_bl(ddt, dsfx, dT, dc) CAST_FN_FROM(bl, uint8_t, L, ddt, dsfx, dT, dc)

CAST_TYPES_A(CAST_ROW_FNS)

/* The table, filled the same way. */
#define CAST_ENTRY(ssfx, ddt, dsfx) [OQ_DTYPE_##ddt] = cast_##ssfx##_##dsfx,
#define CAST_ENTRY_f32(ddt, dsfx, dT, dc) CAST_ENTRY(f32, ddt, dsfx)
#define CAST_ENTRY_f64(ddt, dsfx, dT, dc) CAST_ENTRY(f64, ddt, dsfx)
#define CAST_ENTRY_f16(ddt, dsfx, dT, dc) CAST_ENTRY(f16, ddt, dsfx)
#define CAST_ENTRY_b16(ddt, dsfx, dT, dc) CAST_ENTRY(b16, ddt, dsfx)
#define CAST_ENTRY_i8(ddt, dsfx, dT, dc) CAST_ENTRY(i8, ddt, dsfx)
#define CAST_ENTRY_i16(ddt, dsfx, dT, dc) CAST_ENTRY(i16, ddt, dsfx)
#define CAST_ENTRY_i32(ddt, dsfx, dT, dc) CAST_ENTRY(i32, ddt, dsfx)
#define CAST_ENTRY_i64(ddt, dsfx, dT, dc) CAST_ENTRY(i64, ddt, dsfx)
#define CAST_ENTRY_u8(ddt, dsfx, dT, dc) CAST_ENTRY(u8, ddt, dsfx)
#define CAST_ENTRY_u16(ddt, dsfx, dT, dc) CAST_ENTRY(u16, ddt, dsfx)
#define CAST_ENTRY_u32(ddt, dsfx, dT, dc) CAST_ENTRY(u32, ddt, dsfx)
#define CAST_ENTRY_u64(ddt, dsfx, dT, dc) CAST_ENTRY(u64, ddt, dsfx)
#define CAST_ENTRY_bl(ddt, dsfx, dT, dc) CAST_ENTRY(bl, ddt, dsfx)
#define CAST_TABLE_ROW(sdt, ssfx, sT, sc) [OQ_DTYPE_##sdt] = {CAST_TYPES_B(CAST_ENTRY_##ssfx)},

static const oq_ew_cast_fn cast_table[OQ_DTYPE_COUNT][OQ_DTYPE_COUNT] = {
    CAST_TYPES_A(CAST_TABLE_ROW)};

oq_ew_cast_fn oq_ew_cast_kernel(oq_dtype from, oq_dtype to) {
    if ((int)from < 0 || from >= OQ_DTYPE_COUNT || (int)to < 0 || to >= OQ_DTYPE_COUNT)
        return NULL;
    return cast_table[from][to];
}
