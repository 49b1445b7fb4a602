/* plot.c — `eval --plot FILE.png`: speedup and accuracy of the attention
 * cache against the threshold, drawn into a PNG without a plotting library
 * (RGB pixels, a 5x7 bitmap font, a PNG writer with stored deflate blocks). */
#include "cli.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { W = 760, H = 560 };

typedef struct img {
    uint8_t *px; /* [H][W][3] */
} img;

static void put(img *im, int x, int y, uint32_t rgb) {
    if (x < 0 || y < 0 || x >= W || y >= H) return;
    uint8_t *p = im->px + ((size_t)y * W + x) * 3;
    p[0] = (uint8_t)(rgb >> 16), p[1] = (uint8_t)(rgb >> 8), p[2] = (uint8_t)rgb;
}

static void rect(img *im, int x0, int y0, int x1, int y1, uint32_t rgb) {
    for (int y = y0; y <= y1; y++)
        for (int x = x0; x <= x1; x++) put(im, x, y, rgb);
}

static void line(img *im, int x0, int y0, int x1, int y1, uint32_t rgb, int thick, int dash) {
    int dx = abs(x1 - x0), dy = -abs(y1 - y0), sx = x0 < x1 ? 1 : -1, sy = y0 < y1 ? 1 : -1, err = dx + dy, n = 0;
    for (;;) {
        if (!dash || (n / 6) % 2 == 0) rect(im, x0 - thick / 2, y0 - thick / 2, x0 + thick / 2, y0 + thick / 2, rgb);
        n++;
        if (x0 == x1 && y0 == y1) break;
        int e2 = 2 * err;
        if (e2 >= dy) err += dy, x0 += sx;
        if (e2 <= dx) err += dx, y0 += sy;
    }
}

/* 5x7 glyphs, one row per byte (bit 4 = leftmost column) */
static const struct {
    char c;
    uint8_t rows[7];
} FONT[] = {
    {'0', {14, 17, 19, 21, 25, 17, 14}}, {'1', {4, 12, 4, 4, 4, 4, 14}},     {'2', {14, 17, 1, 2, 4, 8, 31}},
    {'3', {31, 2, 4, 2, 1, 17, 14}},     {'4', {2, 6, 10, 18, 31, 2, 2}},    {'5', {31, 16, 30, 1, 1, 17, 14}},
    {'6', {6, 8, 16, 30, 17, 17, 14}},   {'7', {31, 1, 2, 4, 8, 8, 8}},      {'8', {14, 17, 17, 14, 17, 17, 14}},
    {'9', {14, 17, 17, 15, 1, 2, 12}},   {'.', {0, 0, 0, 0, 0, 12, 12}},     {'-', {0, 0, 0, 31, 0, 0, 0}},
    {'%', {24, 25, 2, 4, 8, 19, 3}},     {'x', {0, 0, 17, 10, 4, 10, 17}},   {':', {0, 12, 12, 0, 12, 12, 0}},
    {'/', {1, 2, 2, 4, 8, 8, 16}},       {'(', {2, 4, 8, 8, 8, 4, 2}},       {')', {8, 4, 2, 2, 2, 4, 8}},
    {',', {0, 0, 0, 0, 12, 4, 8}},       {'+', {0, 4, 4, 31, 4, 4, 0}},      {'=', {0, 0, 31, 0, 31, 0, 0}},
    {'A', {14, 17, 17, 31, 17, 17, 17}}, {'B', {30, 17, 17, 30, 17, 17, 30}}, {'C', {14, 17, 16, 16, 16, 17, 14}},
    {'D', {30, 17, 17, 17, 17, 17, 30}}, {'E', {31, 16, 16, 30, 16, 16, 31}}, {'F', {31, 16, 16, 30, 16, 16, 16}},
    {'G', {14, 17, 16, 23, 17, 17, 15}}, {'H', {17, 17, 17, 31, 17, 17, 17}}, {'I', {14, 4, 4, 4, 4, 4, 14}},
    {'K', {17, 18, 20, 24, 20, 18, 17}}, {'L', {16, 16, 16, 16, 16, 16, 31}}, {'M', {17, 27, 21, 21, 17, 17, 17}},
    {'N', {17, 25, 21, 19, 17, 17, 17}}, {'O', {14, 17, 17, 17, 17, 17, 14}}, {'P', {30, 17, 17, 30, 16, 16, 16}},
    {'Q', {14, 17, 17, 17, 21, 18, 13}}, {'R', {30, 17, 17, 30, 20, 18, 17}}, {'S', {15, 16, 16, 14, 1, 1, 30}},
    {'T', {31, 4, 4, 4, 4, 4, 4}},       {'U', {17, 17, 17, 17, 17, 17, 14}}, {'V', {17, 17, 17, 17, 17, 10, 4}},
    {'W', {17, 17, 17, 21, 21, 21, 10}}, {'X', {17, 17, 10, 4, 10, 17, 17}}, {'Y', {17, 17, 10, 4, 4, 4, 4}},
};

/* text at (x, y) top-left, scale s; unknown characters are blanks */
static int text(img *im, int x, int y, int s, const char *str, uint32_t rgb) {
    for (const char *p = str; *p; p++) {
        char ch = *p == 'x' ? 'x' : (char)toupper((unsigned char)*p);
        for (size_t g = 0; g < sizeof FONT / sizeof FONT[0]; g++) {
            if (FONT[g].c != ch) continue;
            for (int r = 0; r < 7; r++)
                for (int col = 0; col < 5; col++)
                    if (FONT[g].rows[r] & (16 >> col)) rect(im, x + col * s, y + r * s, x + col * s + s - 1, y + r * s + s - 1, rgb);
            break;
        }
        x += 6 * s;
    }
    return x;
}

static int text_width(const char *s, int scale) { return (int)strlen(s) * 6 * scale; }

/* ---- PNG ------------------------------------------------------------------------------------ */

static uint32_t crc_table[256];
static void crc_init(void) {
    for (uint32_t n = 0; n < 256; n++) {
        uint32_t c = n;
        for (int k = 0; k < 8; k++) c = c & 1 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
        crc_table[n] = c;
    }
}
static uint32_t crc(uint32_t c, const uint8_t *b, size_t n) {
    c = ~c;
    for (size_t i = 0; i < n; i++) c = crc_table[(c ^ b[i]) & 0xFF] ^ (c >> 8);
    return ~c;
}
static void be32(uint8_t *p, uint32_t v) { p[0] = (uint8_t)(v >> 24), p[1] = (uint8_t)(v >> 16), p[2] = (uint8_t)(v >> 8), p[3] = (uint8_t)v; }

static int chunk(FILE *f, const char *type, const uint8_t *data, size_t n) {
    uint8_t hdr[8];
    be32(hdr, (uint32_t)n);
    memcpy(hdr + 4, type, 4);
    uint32_t c = crc(crc(0, hdr + 4, 4), data, n);
    uint8_t tail[4];
    be32(tail, c);
    return fwrite(hdr, 1, 8, f) == 8 && (n == 0 || fwrite(data, 1, n, f) == n) && fwrite(tail, 1, 4, f) == 4;
}

/* PNG with a zlib stream of stored (uncompressed) deflate blocks */
static int write_png(const char *path, const img *im) {
    crc_init();
    const size_t raw_n = (size_t)H * (1 + 3 * W), nblk = (raw_n + 65534) / 65535;
    uint8_t *raw = malloc(raw_n), *z = malloc(2 + raw_n + 5 * nblk + 4);
    if (!raw || !z) {
        free(raw), free(z);
        return cli_fail("plot: out of memory");
    }
    for (int y = 0; y < H; y++) { /* filter type 0 per row */
        raw[(size_t)y * (1 + 3 * W)] = 0;
        memcpy(raw + (size_t)y * (1 + 3 * W) + 1, im->px + (size_t)y * W * 3, (size_t)W * 3);
    }
    size_t zn = 0;
    z[zn++] = 0x78, z[zn++] = 0x01;
    for (size_t off = 0; off < raw_n; off += 65535) {
        const size_t len = raw_n - off < 65535 ? raw_n - off : 65535;
        z[zn++] = off + len == raw_n; /* BFINAL, BTYPE 00 */
        z[zn++] = (uint8_t)len, z[zn++] = (uint8_t)(len >> 8), z[zn++] = (uint8_t)~len, z[zn++] = (uint8_t)(~len >> 8);
        memcpy(z + zn, raw + off, len);
        zn += len;
    }
    uint32_t a = 1, b = 0; /* Adler-32 */
    for (size_t i = 0; i < raw_n; i++) a = (a + raw[i]) % 65521, b = (b + a) % 65521;
    be32(z + zn, (b << 16) | a);
    zn += 4;
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "wb");
    int ok = f != NULL;
    static const uint8_t sig[8] = {137, 80, 78, 71, 13, 10, 26, 10};
    uint8_t ihdr[13];
    be32(ihdr, W), be32(ihdr + 4, H);
    ihdr[8] = 8, ihdr[9] = 2, ihdr[10] = 0, ihdr[11] = 0, ihdr[12] = 0; /* 8-bit RGB */
    ok = ok && fwrite(sig, 1, 8, f) == 8 && chunk(f, "IHDR", ihdr, 13) && chunk(f, "IDAT", z, zn) &&
         chunk(f, "IEND", NULL, 0);
    if (f && fclose(f) != 0) ok = 0;
    if (ok && rename(tmp, path) != 0) ok = 0;
    free(raw), free(z);
    if (!ok) {
        remove(tmp);
        return cli_fail("plot: cannot write '%s': %s", path, strerror(errno));
    }
    return 0;
}

/* ---- the chart ---------------------------------------------------------------------------------- */

static void nice_range(const double *v, int n, double extra, double *lo, double *hi) {
    *lo = extra, *hi = extra;
    for (int i = 0; i < n; i++) *lo = fmin(*lo, v[i]), *hi = fmax(*hi, v[i]);
    double pad = (*hi - *lo) * 0.1;
    if (pad <= 0) pad = fabs(*hi) * 0.05 + 0.01;
    *lo -= pad, *hi += pad;
}

/* one panel: series y[n] at equidistant x (labelled with thresholds), reference line at ref */
static void panel(img *im, int top, int bottom, const char *title, const double *thr, const double *y, const char **labels,
                  int n, double ref, const char *ref_label, uint32_t col) {
    const int left = 90, right = W - 30;
    double lo, hi;
    nice_range(y, n, ref, &lo, &hi);
    rect(im, left, top, right, bottom, 0xFFFFFF);
    line(im, left, top, left, bottom, 0x000000, 1, 0);
    line(im, left, bottom, right, bottom, 0x000000, 1, 0);
    text(im, left, top - 22, 2, title, 0x000000);
    char buf[64];
    for (int k = 0; k <= 4; k++) { /* y ticks */
        double v = lo + (hi - lo) * k / 4;
        int py = bottom - (int)((bottom - top) * (double)k / 4);
        line(im, left - 5, py, left, py, 0x000000, 1, 0);
        line(im, left + 1, py, right, py, 0xDDDDDD, 1, 0);
        snprintf(buf, sizeof buf, "%.3g", v);
        text(im, left - 10 - text_width(buf, 1), py - 3, 1, buf, 0x000000);
    }
#define PX(i) (n > 1 ? left + 30 + (int)((right - left - 60) * (double)(i) / (n - 1)) : (left + right) / 2)
#define PY(v) (bottom - (int)((bottom - top) * ((v) - lo) / (hi - lo)))
    int ry = PY(ref);
    line(im, left + 1, ry, right, ry, 0x888888, 1, 1);
    text(im, right - text_width(ref_label, 1) - 4, ry - 10, 1, ref_label, 0x555555);
    for (int i = 0; i < n; i++) {
        if (i) line(im, PX(i - 1), PY(y[i - 1]), PX(i), PY(y[i]), col, 3, 0);
        snprintf(buf, sizeof buf, "%g", thr[i]);
        text(im, PX(i) - text_width(buf, 1) / 2, bottom + 8, 1, buf, 0x000000);
    }
    for (int i = 0; i < n; i++) {
        rect(im, PX(i) - 4, PY(y[i]) - 4, PX(i) + 4, PY(y[i]) + 4, col);
        if (labels && labels[i]) { /* centred above the point, kept inside the panel */
            const int w = text_width(labels[i], 1), lx = PX(i) - w / 2;
            text(im, lx < left + 2 ? left + 2 : lx + w > right - 2 ? right - 2 - w : lx, PY(y[i]) - 16, 1, labels[i], 0x333333);
        }
    }
#undef PX
#undef PY
}

int cli_plot_sweep(const char *path, int n, const double *thr, const double *speedup, const double *metric,
                   const double *hit_rate, double metric_exact, const char *metric_name) {
    if (n <= 0) return cli_fail("plot: no thresholds to plot (use --thresholds)");
    img im = {calloc((size_t)W * H * 3, 1)};
    if (!im.px) return cli_fail("plot: out of memory");
    rect(&im, 0, 0, W - 1, H - 1, 0xF4F4F4);
    char **hl = calloc((size_t)n, sizeof *hl);
    for (int i = 0; hl && i < n; i++)
        if ((hl[i] = malloc(32))) snprintf(hl[i], 32, "%.0f%% HITS", 100 * hit_rate[i]);
    char ttl[96];
    panel(&im, 50, 235, "END-TO-END SPEEDUP (WHOLE STREAM)", thr, speedup, NULL, n, 1.0, "EXACT = 1", 0x1F77B4);
    snprintf(ttl, sizeof ttl, "%s WITH THE CACHE", metric_name);
    char refl[64];
    snprintf(refl, sizeof refl, "EXACT %.2f", metric_exact);
    panel(&im, 315, 500, ttl, thr, metric, (const char **)hl, n, metric_exact, refl, 0xD62728);
    text(&im, W / 2 - text_width("THRESHOLD", 2) / 2, H - 28, 2, "THRESHOLD", 0x000000);
    int rc = write_png(path, &im);
    for (int i = 0; hl && i < n; i++) free(hl[i]);
    free(hl);
    free(im.px);
    return rc;
}
