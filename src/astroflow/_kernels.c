/* astroflow's compiled kernels: pixel rejection and combination (astroflow.integrate) and the
 * two-pass Lanczos resampling (astroflow.resample). Built ahead of time with the package and
 * called through ctypes (astroflow.kernels), so a job loads them in a millisecond: numba's
 * cached kernels cost every job ~0.5 s of imports and registries, a tenth of a small night.
 *
 * Conventions: arrays are C-contiguous; a band is (n, p) float32, frame i's values of column j
 * at x[i * p + j]; NaN is "no data" and never counted. Every function works on a range of
 * columns, rows or frames that no other call writes, so the Python side splits the work over
 * threads (ctypes releases the GIL) and the result is the same for any number of them.
 * Floating point is IEEE without contraction (-ffp-contract=off): the same bits on every CPU.
 * Every function returns 0, or -1 where it could not allocate its scratch memory.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
/* one build runs everywhere and uses the CPU's widest vectors where it has them */
#define VECTOR __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define VECTOR
#endif

#define LANES 16   /* columns sorted side by side (one AVX-512 register of float32) */
#define MIN_KEEP 3 /* iterative methods never reject a column below this many values */

typedef int64_t i64;

/* ---------------------------------------------------------------------------------------- */
/* order statistics of a few doubles                                                        */

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* sort s[:m] in place: insertion sort for the usual few values, qsort for many */
static void sort_few(double *s, i64 m) {
    if (m > 48) {
        qsort(s, (size_t)m, sizeof(double), cmp_double);
        return;
    }
    for (i64 i = 1; i < m; i++) {
        double v = s[i];
        i64 j = i - 1;
        while (j >= 0 && s[j] > v) {
            s[j + 1] = s[j];
            j--;
        }
        s[j + 1] = v;
    }
}

static inline double median_sorted(const double *s, i64 n) {
    i64 h = n / 2;
    return n % 2 ? s[h] : 0.5 * (s[h - 1] + s[h]);
}

static inline double quantile_sorted(const double *s, i64 n, double q) {
    double pos = q * (double)(n - 1);
    i64 i = (i64)pos;
    return i + 1 >= n ? s[i] : s[i] + (pos - (double)i) * (s[i + 1] - s[i]);
}

/* median of s[:m], reordering them: insertion sort for a few values, Hoare's selection
 * (O(m) where a sort is O(m log m)) for many */
static double median_select(double *s, i64 m) {
    if (m <= 48) {
        sort_few(s, m);
        return median_sorted(s, m);
    }
    i64 k = m / 2, lo = 0, hi = m - 1;
    while (lo < hi) { /* s[k] becomes the k-th smallest, smaller values before it, larger after */
        double a = s[lo], b = s[(lo + hi) / 2], c = s[hi];
        double pivot = fmax(fmin(a, b), fmin(fmax(a, b), c)); /* median of three */
        i64 i = lo, j = hi;
        while (i <= j) {
            while (s[i] < pivot) i++;
            while (s[j] > pivot) j--;
            if (i <= j) {
                double t = s[i];
                s[i] = s[j];
                s[j] = t;
                i++;
                j--;
            }
        }
        if (k <= j)
            hi = j;
        else if (k >= i)
            lo = i;
        else
            break;
    }
    if (m % 2) return s[k];
    double below = s[0]; /* the largest value before position k */
    for (i64 i = 1; i < k; i++) below = fmax(below, s[i]);
    return 0.5 * (below + s[k]);
}

/* ---------------------------------------------------------------------------------------- */
/* rejection of one column (astroflow.integrate documents the methods)                      */

enum { SIGMA = 0, WINSORIZED = 1, LINEAR = 2, ESD = 3, PERCENTILE = 4 };

typedef struct {
    int code, max_iter;
    double low, high;
    const double *table; /* ESD critical values [n, step] or normal scores [n, rank] */
    i64 table_cols, r_max;
} Method;

/* Reject in one column v[:n_all] (valid values only); state: 0 kept, 1 low, 2 high.
 * s[:n_all] holds the same values sorted ascending and sidx their indices into v; dev, removed
 * and below are scratch buffers of at least n_all (r_max) entries. */
static void reject_column(const double *v, i64 n_all, const Method *mt, uint8_t *state, double *s,
                          i64 *sidx, double *dev, i64 *removed, uint8_t *below) {
    const double low = mt->low, high = mt->high, *table = mt->table;
    const i64 tc = mt->table_cols;
    if (mt->code == PERCENTILE) { /* around the median of all values */
        double med = median_sorted(s, n_all);
        for (i64 k = 0; k < n_all; k++) {
            if (med - v[k] > low * fabs(med))
                state[k] = 1;
            else if (v[k] - med > high * fabs(med))
                state[k] = 2;
        }
        return;
    }
    if (mt->code == ESD) {
        /* the value farthest from the mean of the remaining ones is always their min or max: sort
         * once, then each step is O(1) with running sums (around the first median, for
         * precision), instead of O(n) scans (1000 frames x 300 steps per pixel otherwise) */
        double shift = median_sorted(s, n_all), total = 0.0, squares = 0.0;
        for (i64 k = 0; k < n_all; k++) {
            total += s[k] - shift;
            squares += (s[k] - shift) * (s[k] - shift);
        }
        i64 lo = 0, hi = n_all - 1, count = 0;
        for (i64 k = 0; k < mt->r_max; k++) removed[k] = -1;
        for (i64 i = 1; i <= mt->r_max; i++) {
            i64 m = n_all - i + 1;
            if (m < MIN_KEEP) break;
            double mean = total / (double)m;
            double sd = m > 1 ? sqrt(fmax(squares - (double)m * mean * mean, 0.0) / (double)(m - 1)) : 0.0;
            if (sd <= 0) break;
            double d_lo = mean - (s[lo] - shift), d_hi = (s[hi] - shift) - mean, best;
            i64 j;
            if (d_hi >= d_lo) {
                j = hi--;
                best = d_hi / sd;
                below[i - 1] = 0;
            } else {
                j = lo++;
                best = d_lo / sd;
                below[i - 1] = 1;
            }
            removed[i - 1] = sidx[j];
            total -= s[j] - shift;
            squares -= (s[j] - shift) * (s[j] - shift);
            if (best > table[n_all * tc + i]) count = i; /* the outliers: the first `count` removed */
        }
        for (i64 i = 0; i < count; i++)
            if (removed[i] >= 0) state[removed[i]] = below[i] ? 1 : 2;
        return;
    }
    /* sorted once with the values' indices: each iteration drops the rejected ones from the
     * sorted list (still sorted), instead of sorting the kept values again */
    i64 m = n_all;
    for (int it = 0; it < mt->max_iter; it++) {
        i64 kept = 0;
        for (i64 k = 0; k < m; k++) {
            if (state[sidx[k]] == 0) {
                s[kept] = s[k];
                sidx[kept] = sidx[k];
                kept++;
            }
        }
        m = kept;
        if (m <= MIN_KEEP) return;
        double med = median_sorted(s, m);
        int changed = 0;
        if (mt->code == LINEAR) { /* line through the sorted values against their normal scores */
            double q1 = quantile_sorted(s, m, 0.25);
            double sd = (quantile_sorted(s, m, 0.75) - q1) / 1.3490; /* slope = sigma */
            /* a value can only be off the line if it is beyond these even at its extreme score:
             * only those few need their rank (most columns have none) */
            double lo_cut = sd * (table[m * tc + m - 1] - low), hi_cut = sd * (high + table[m * tc]);
            for (i64 k = 0; k < n_all; k++) {
                double d = v[k] - med;
                if (state[k] != 0 || (lo_cut <= d && d <= hi_cut)) continue;
                i64 r = 0;
                while (r < m && s[r] < v[k]) r++;
                double resid = d - sd * table[m * tc + r];
                if (resid < -low * sd) {
                    state[k] = 1;
                    changed = 1;
                } else if (resid > high * sd) {
                    state[k] = 2;
                    changed = 1;
                }
            }
        } else {
            double sd = 0.0, total = 0.0, mad = 0.0;
            if (mt->code == WINSORIZED) { /* Huber sigma from values clipped at 1.5 sigma (Siril) */
                double mean = 0.0;
                for (i64 k = 0; k < m; k++) mean += s[k];
                mean /= (double)m;
                for (i64 k = 0; k < m; k++) sd += (s[k] - mean) * (s[k] - mean);
                sd = sqrt(sd / (double)m);
                for (int w = 0; w < 10; w++) {
                    double lo_w = med - 1.5 * sd, hi_w = med + 1.5 * sd, nsd = 0.0;
                    mean = 0.0;
                    for (i64 k = 0; k < m; k++) mean += fmin(fmax(s[k], lo_w), hi_w);
                    mean /= (double)m;
                    for (i64 k = 0; k < m; k++) {
                        double c = fmin(fmax(s[k], lo_w), hi_w) - mean;
                        nsd += c * c;
                    }
                    nsd = 1.134 * sqrt(nsd / (double)m);
                    int done = sd > 0 ? fabs(nsd - sd) < 5e-4 * sd : 1;
                    sd = nsd;
                    if (done) break;
                }
            } else { /* sigma: leave-one-out deviation, never below 1.4826 * MAD */
                for (i64 k = 0; k < m; k++) total += (s[k] - med) * (s[k] - med);
                /* the deviations in order: a merge outward from the median of the sorted values */
                i64 hi = 0;
                while (hi < m && s[hi] < med) hi++;
                i64 lo = hi - 1;
                for (i64 k = 0; k < m; k++) {
                    if (hi >= m || (lo >= 0 && med - s[lo] <= s[hi] - med))
                        dev[k] = med - s[lo--];
                    else
                        dev[k] = s[hi++] - med;
                }
                mad = 1.4826 * median_sorted(dev, m);
            }
            /* sigma: the thresholds for m values (astroflow.integrate.sigma_thresholds) */
            double lo_k = mt->code == SIGMA ? table[m * tc] : low;
            double hi_k = mt->code == SIGMA ? table[m * tc + 1] : high;
            for (i64 k = 0; k < n_all; k++) {
                if (state[k] != 0) continue;
                if (mt->code == SIGMA) {
                    double loo = sqrt(fmax(total - (v[k] - med) * (v[k] - med), 0.0) /
                                      (double)(m - 2 > 1 ? m - 2 : 1));
                    sd = fmax(mad, loo);
                }
                if (v[k] < med - lo_k * sd) {
                    state[k] = 1;
                    changed = 1;
                } else if (v[k] > med + hi_k * sd) {
                    state[k] = 2;
                    changed = 1;
                }
            }
        }
        if (!changed) return;
    }
}

/* The sorting network's compare-and-swap on every lane of a tile: the same operation on 16
 * columns is SIMD code, 2-4x faster than sorting the columns one by one. */
VECTOR static void sort_tile(float *tv, int32_t *ti, const i64 *pairs, i64 npairs) {
    for (i64 c = 0; c < npairs; c++) {
        float *restrict va = tv + pairs[2 * c] * LANES, *restrict vb = tv + pairs[2 * c + 1] * LANES;
        int32_t *restrict ia = ti + pairs[2 * c] * LANES, *restrict ib = ti + pairs[2 * c + 1] * LANES;
        for (int l = 0; l < LANES; l++) {
            float a = va[l], z = vb[l];
            int32_t ka = ia[l], kz = ib[l];
            int swap = a > z;
            va[l] = swap ? z : a;
            vb[l] = swap ? a : z;
            ia[l] = swap ? kz : ka;
            ib[l] = swap ? ka : kz;
        }
    }
}

/* Columns c0:c0 + lanes of an (n, p) band into a tile (LANES columns side by side, invalid
 * values and missing lanes as +inf) with each value's frame index; count: valid values per lane.
 * A full tile's loads are unconditional, so the loop is SIMD code. */
VECTOR static void load_tile(const float *x, i64 n, i64 p, i64 c0, int lanes, float *tv, int32_t *ti,
                             i64 *count) {
    for (int l = 0; l < LANES; l++) count[l] = 0;
    for (i64 i = 0; i < n; i++) {
        const float *restrict row = x + i * p + c0;
        float *restrict t = tv + i * LANES;
        int32_t *restrict k = ti + i * LANES;
        if (lanes == LANES) {
            for (int l = 0; l < LANES; l++) {
                float val = row[l];
                int valid = isfinite(val);
                t[l] = valid ? val : INFINITY;
                k[l] = (int32_t)i;
                count[l] += valid;
            }
        } else {
            for (int l = 0; l < LANES; l++) {
                float val = l < lanes ? row[l] : INFINITY;
                int valid = l < lanes && isfinite(val);
                t[l] = valid ? val : INFINITY;
                k[l] = (int32_t)i;
                count[l] += valid;
            }
        }
    }
}

/* Percentile clipping of a sorted tile whose lanes all hold n >= 3 valid values: the test of
 * reject_column's PERCENTILE branch (the same double arithmetic) on 16 columns at once, read
 * from the band, with no per-column copies (flats and few-frame masters: ~1.7x faster). */
VECTOR static void percentile_tile(const float *x, i64 n, i64 p, i64 c0, const float *tv, double low,
                                   double high, uint8_t *out) {
    double med[LANES], lo[LANES], hi[LANES];
    i64 h = n / 2;
    for (int l = 0; l < LANES; l++) {
        med[l] = n % 2 ? (double)tv[h * LANES + l]
                       : 0.5 * ((double)tv[(h - 1) * LANES + l] + (double)tv[h * LANES + l]);
        lo[l] = low * fabs(med[l]);
        hi[l] = high * fabs(med[l]);
    }
    for (i64 i = 0; i < n; i++) {
        const float *restrict row = x + i * p + c0;
        uint8_t *restrict o = out + i * p + c0;
        for (int l = 0; l < LANES; l++) {
            double v = row[l];
            o[l] = med[l] - v > lo[l] ? 1 : (v - med[l] > hi[l] ? 2 : 0);
        }
    }
}

/* Rejection state of columns j0:j1 of a float32 (n, p) band into out (zeroed by the caller):
 * 16 columns at a time are sorted side by side by the comparators `pairs` (Batcher's network,
 * astroflow.integrate.sorting_network), invalid values (NaN) last as +inf; each column is then
 * judged alone (reject_column). */
int af_reject_columns(const float *x, i64 n, i64 p, i64 j0, i64 j1, int code, double low, double high,
                      int max_iter, const double *table, i64 table_cols, i64 r_max, const i64 *pairs,
                      i64 npairs, uint8_t *out) {
    Method mt = {code, max_iter, low, high, table, table_cols, r_max};
    i64 nr = r_max > 1 ? r_max : 1;
    double *v = malloc(sizeof(double) * n), *s = malloc(sizeof(double) * n), *dev = malloc(sizeof(double) * n);
    i64 *where = malloc(sizeof(i64) * n), *sidx = malloc(sizeof(i64) * n), *compact = malloc(sizeof(i64) * n);
    i64 *removed = malloc(sizeof(i64) * nr);
    uint8_t *state = malloc(n), *below = malloc(nr);
    float *tv = malloc(sizeof(float) * n * LANES);
    int32_t *ti = malloc(sizeof(int32_t) * n * LANES);
    int ok = v && s && dev && where && sidx && compact && removed && state && below && tv && ti;
    for (i64 c0 = j0; ok && c0 < j1; c0 += LANES) {
        int lanes = j1 - c0 < LANES ? (int)(j1 - c0) : LANES;
        i64 count[LANES];
        load_tile(x, n, p, c0, lanes, tv, ti, count);
        sort_tile(tv, ti, pairs, npairs);
        int full = lanes == LANES && n >= 3;
        for (int l = 0; full && l < LANES; l++) full = count[l] == n;
        if (code == PERCENTILE && full) {
            percentile_tile(x, n, p, c0, tv, low, high, out);
            continue;
        }
        for (int l = 0; l < lanes; l++) {
            i64 j = c0 + l, m = count[l];
            if (m < n) { /* frames without data here: v holds the valid values only */
                i64 c = 0;
                for (i64 i = 0; i < n; i++) {
                    if (isfinite(x[i * p + j])) {
                        compact[i] = c;
                        where[c++] = i;
                    }
                }
            }
            for (i64 k = 0; k < m; k++) {
                s[k] = tv[k * LANES + l];
                sidx[k] = m < n ? compact[ti[k * LANES + l]] : ti[k * LANES + l];
                v[sidx[k]] = s[k];
                if (m == n) where[k] = k;
            }
            if (m < 3) continue;
            memset(state, 0, (size_t)m);
            reject_column(v, m, &mt, state, s, sidx, dev, removed, below);
            for (i64 k = 0; k < m; k++)
                if (state[k]) out[where[k] * p + j] = state[k];
        }
    }
    free(v), free(s), free(dev), free(where), free(sidx), free(compact), free(removed);
    free(state), free(below), free(tv), free(ti);
    return ok ? 0 : -1;
}

/* x[i, j] = x[i, j] * gain[i] + offset[i] (float32) for the columns j0:j1 of an (n, p) band */
VECTOR int af_normalise(float *x, i64 n, i64 p, i64 j0, i64 j1, const double *gain, const double *offset) {
    for (i64 i = 0; i < n; i++) {
        float g = (float)gain[i], o = (float)offset[i];
        float *restrict row = x + i * p;
        for (i64 j = j0; j < j1; j++) row[j] = row[j] * g + o;
    }
    return 0;
}

/* ---------------------------------------------------------------------------------------- */
/* growth of high rejections (astroflow.integrate._grow_high documents it), on an            */
/* (n, ny, nx) band; three steps, each over a range no other call writes                     */

/* step 1, rows y0:y1: high[y, x] = 1 where some frame has a high rejection (state 2) */
VECTOR int af_grow_mark(const uint8_t *state, i64 n, i64 ny, i64 nx, i64 y0, i64 y1, uint8_t *high) {
    for (i64 y = y0; y < y1; y++) {
        uint8_t *restrict row = high + y * nx;
        for (i64 i = 0; i < n; i++) {
            const uint8_t *restrict src = state + (i * ny + y) * nx;
            for (i64 xx = 0; xx < nx; xx++) row[xx] |= src[xx] >> 1;
        }
    }
    return 0;
}

/* step 2, rows y0:y1: a kept value within `radius` of a strong high rejection of its frame that
 * deviates from its column's median by more than k robust deviations becomes 3 (still "not 2"
 * for the other columns' test: growth seeds from the test's rejections, not from growth) */
int af_grow_judge(const float *x, uint8_t *state, const uint8_t *high, i64 n, i64 ny, i64 nx, i64 y0,
                  i64 y1, i64 radius, double k, double seed) {
    double *vals = malloc(sizeof(double) * n);
    if (!vals) return -1;
    for (i64 y = y0; y < y1; y++) {
        i64 ya = y - radius > 0 ? y - radius : 0, yb = y + radius + 1 < ny ? y + radius + 1 : ny;
        for (i64 xx = 0; xx < nx; xx++) {
            i64 xa = xx - radius > 0 ? xx - radius : 0, xb = xx + radius + 1 < nx ? xx + radius + 1 : nx;
            int close = 0;
            for (i64 yy = ya; yy < yb; yy++)
                for (i64 xq = xa; xq < xb; xq++) close |= high[yy * nx + xq];
            if (!close) continue;
            i64 m = 0;
            for (i64 i = 0; i < n; i++) { /* outliers must not set the scale: high ones left out */
                i64 at = (i * ny + y) * nx + xx;
                if (state[at] != 2 && isfinite(x[at])) vals[m++] = x[at];
            }
            if (m == 0) continue;
            double med = median_select(vals, m);
            for (i64 i = 0; i < m; i++) vals[i] = fabs(vals[i] - med);
            double sd = 1.4826 * median_select(vals, m);
            for (i64 i = 0; i < n; i++) {
                i64 at = (i * ny + y) * nx + xx;
                if (state[at] != 0 || !(fabs(x[at] - med) > k * sd)) continue;
                int strong = 0; /* a high rejection of this frame, strong enough to seed, nearby */
                for (i64 yy = ya; yy < yb; yy++) {
                    for (i64 xq = xa; xq < xb; xq++) {
                        i64 q = (i * ny + yy) * nx + xq;
                        strong |= state[q] == 2 && x[q] > med + seed * sd;
                    }
                }
                if (strong) state[at] = 3;
            }
        }
    }
    free(vals);
    return 0;
}

/* step 3, frames i0:i1: 3 -> 2, the others unchanged (branch-free, so SIMD) */
VECTOR int af_grow_settle(uint8_t *state, i64 ny, i64 nx, i64 i0, i64 i1) {
    uint8_t *restrict st = state + i0 * ny * nx;
    for (i64 q = 0; q < (i1 - i0) * ny * nx; q++) st[q] -= st[q] & (st[q] >> 1) & 1;
    return 0;
}

/* ---------------------------------------------------------------------------------------- */
/* combination                                                                              */

/* Weighted average (or median) of the kept values of columns start + (j0:j1) of an (n, p)
 * band (halo rows are only read for the growth). Writes per column: value (NaN-free; 0 only
 * where no frame has data), the fraction of valid values rejected low / high, and the number of
 * valid values. A column whose every value was rejected takes the median of all its values. */
VECTOR int af_combine_columns(const float *x, const uint8_t *state, i64 n, i64 p, i64 start, i64 j0, i64 j1,
                              const double *weights, int median, float *value, float *low_frac,
                              float *high_frac, int32_t *valid) {
    i64 w = j1 - j0;
    double *s = malloc(sizeof(double) * (n > 0 ? n : 1)), *num = calloc(w, sizeof(double)),
           *den = calloc(w, sizeof(double));
    int32_t *nv = calloc(w, sizeof(int32_t)), *nl = calloc(w, sizeof(int32_t)), *nh = calloc(w, sizeof(int32_t));
    int ok = s && num && den && nv && nl && nh;
    for (i64 i = 0; ok && i < n; i++) { /* frame by frame along the columns: branch-free, so SIMD */
        double wt = weights[i];
        const float *restrict xi = x + i * p + start + j0;
        const uint8_t *restrict si = state + i * p + start + j0;
        for (i64 q = 0; q < w; q++) {
            float v = xi[q];
            int finite = isfinite(v), kept = finite & (si[q] == 0); /* &: no branch */
            num[q] += kept ? wt * (double)v : 0.0;
            den[q] += kept ? wt : 0.0;
            nv[q] += finite;
            nl[q] += finite & (si[q] == 1);
            nh[q] += finite & (si[q] == 2);
        }
    }
    for (i64 q = 0; ok && q < w; q++) {
        i64 jj = j0 + q, col = start + jj;
        int everything = nl[q] + nh[q] == nv[q];
        if (median || (nv[q] > 0 && everything)) {
            /* the median of the kept values, or of every valid value where all were rejected */
            i64 m = 0;
            for (i64 i = 0; i < n; i++) {
                float v = x[i * p + col];
                if (isfinite(v) && (everything || state[i * p + col] == 0)) s[m++] = v;
            }
            sort_few(s, m);
            value[jj] = m > 0 ? (float)median_sorted(s, m) : 0.0f;
        } else {
            value[jj] = den[q] > 0 ? (float)(num[q] / den[q]) : 0.0f;
        }
        valid[jj] = nv[q];
        low_frac[jj] = (float)((double)nl[q] / (double)(nv[q] > 1 ? nv[q] : 1));
        high_frac[jj] = (float)((double)nh[q] / (double)(nv[q] > 1 ? nv[q] : 1));
    }
    free(s), free(num), free(den), free(nv), free(nl), free(nh);
    return ok ? 0 : -1;
}

/* ---------------------------------------------------------------------------------------- */
/* two-pass Lanczos-4 resampling (astroflow.resample documents the geometry)                */

#define TAPS 8   /* 2 * A, A = 4 */
#define RUN 16   /* columns of one weight row below which pass 1 goes column by column */

static inline i64 reflect(i64 i, i64 n) {
    if (n == 1) return 0;
    while (i < 0 || i >= n) i = i < 0 ? -i - 1 : 2 * n - 1 - i;
    return i;
}

/* Pass 1 over the source rows s0:s1 of src (rows x width): out[s, x] = S(u_s(x), s), out is
 * (rows x nx_out). Along a row u_s(x) = alpha x + beta_s, so g = u - x drifts by alpha - 1 a
 * column (~1e-5 for a night's rotations and scales, 0 for shifts): columns come in runs of one
 * first tap floor(g) and one weight row (frac(g) in 1/steps px), and a run is a 1-D convolution
 * with fixed weights, contiguous in x (SIMD code). Where runs are short (a scale or a rotation of
 * degrees, a meridian flip), each column is its own run. */
VECTOR int af_rows_pass(const float *src, i64 width, i64 s0, i64 s1, double a, double b, double c, double d,
                         double e, double f, float *out, i64 nx_out, const float *table, i64 steps) {
    double alpha = a - b * d / e, drift = alpha - 1.0;
    int runs = fabs(drift) * (double)steps * RUN <= 1;
    for (i64 s = s0; s < s1; s++) {
        const float *row = src + s * width;
        float *orow = out + s * nx_out;
        double beta = b * ((double)s - f) / e + c;
        i64 x = 0;
        while (x < nx_out) {
            double g = alpha * (double)x + beta - (double)x;
            i64 first = (i64)floor(g);
            i64 k = (i64)((g - (double)first) * (double)steps + 0.5);
            i64 x1 = x + 1;
            if (runs) { /* columns until g leaves the bin of this weight row (or this first tap) */
                i64 len;
                if (drift > 0)
                    len = (i64)((fmin((double)first + ((double)k + 0.5) / steps, (double)first + 1.0) - g) / drift) + 1;
                else if (drift < 0)
                    len = (i64)((g - fmax((double)first + ((double)k - 0.5) / steps, (double)first)) / -drift) + 1;
                else
                    len = nx_out;
                x1 = x + (len > 1 ? len : 1);
                if (x1 > nx_out) x1 = nx_out;
            }
            i64 lo = x + first - (TAPS / 2 - 1);  /* first tap of the run's first column */
            i64 inner = width - first - TAPS / 2; /* the run's columns with every tap in the row */
            if (inner > x1) inner = x1;
            const float *w = table + k * TAPS;
            if (lo >= 0 && inner - x >= RUN) {
                x1 = inner;
                float *restrict seg = orow + x;
                const float *restrict taps = row + lo;
                i64 len = x1 - x;
                for (i64 i = 0; i < len; i++) seg[i] = w[0] * taps[i];
                for (int t = 1; t < TAPS; t++) {
                    float wt = w[t];
                    const float *restrict tt = taps + t;
                    for (i64 i = 0; i < len; i++) seg[i] += wt * tt[i];
                }
            } else {
                for (i64 xx = x; xx < x1; xx++) {
                    i64 i0 = lo + xx - x;
                    float acc = 0.0f;
                    if (i0 >= 0 && i0 + TAPS <= width) /* inside: no mirrored taps */
                        for (int t = 0; t < TAPS; t++) acc += w[t] * row[i0 + t];
                    else
                        for (int t = 0; t < TAPS; t++) acc += w[t] * row[reflect(i0 + t, width)];
                    orow[xx] = acc;
                }
            }
            x = x1;
        }
    }
    return 0;
}

/* Pass 2, output rows y0:y1: out[y, x] = T(x, v(x, y)) with v = d x + e y + f; tmp is
 * (rows x nx), out (ny_out x nx). Along an output row the first tap row floor(v) - 3 changes
 * every 1/|d| columns (a hundred for a night's rotations): within such a run each tap is a
 * row of tmp read in order and a weight looked up per column (a gather), so the run is SIMD
 * code, the taps summed in the same order as one column at a time. */
VECTOR int af_columns_pass(const float *tmp, i64 rows, double d, double e, double f, float *out, i64 y0,
                           i64 y1, i64 nx, const float *table, i64 steps) {
    int32_t *first = malloc(sizeof(int32_t) * (nx > 0 ? nx : 1)), *bin = malloc(sizeof(int32_t) * (nx > 0 ? nx : 1));
    if (!first || !bin) {
        free(first), free(bin);
        return -1;
    }
    for (i64 y = y0; y < y1; y++) {
        float *restrict orow = out + y * nx;
        for (i64 x = 0; x < nx; x++) {
            double v = d * (double)x + e * (double)y + f;
            i64 iv = (i64)floor(v);
            first[x] = (int32_t)(iv - (TAPS / 2 - 1));
            bin[x] = (int32_t)((i64)((v - (double)iv) * (double)steps + 0.5) * TAPS);
        }
        i64 x = 0;
        while (x < nx) {
            i64 i0 = first[x], x1 = x + 1;
            while (x1 < nx && first[x1] == i0) x1++;
            if (i0 >= 0 && i0 + TAPS <= rows) {
                const float *restrict r = tmp + i0 * nx;
                for (i64 xx = x; xx < x1; xx++) {
                    const float *w = table + bin[xx];
                    float acc = 0.0f;
                    for (int t = 0; t < TAPS; t++) acc += w[t] * r[t * nx + xx];
                    orow[xx] = acc;
                }
            } else {
                for (i64 xx = x; xx < x1; xx++) {
                    float acc = 0.0f;
                    for (int t = 0; t < TAPS; t++) acc += table[bin[xx] + t] * tmp[reflect(i0 + t, rows) * nx + xx];
                    orow[xx] = acc;
                }
            }
            x = x1;
        }
    }
    free(first), free(bin);
    return 0;
}

/* an importable module too, so the package's build and tools treat it as one; its functions
 * are reached through ctypes (astroflow.kernels) */
static struct PyModuleDef kernels_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "_kernels",
    .m_doc = "astroflow's compiled kernels (see astroflow.kernels)",
    .m_size = -1,
};

PyMODINIT_FUNC PyInit__kernels(void) { return PyModule_Create(&kernels_module); }
