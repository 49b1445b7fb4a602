/* store.c — append-only, mmap'd, checksummed attention-map database.
 *
 * File layout (little-endian, all offsets from the file start):
 *   [0, 4096)    header page
 *       0    file_hdr (128 B): magic "ACMAPDB\0", version, model fingerprint and
 *            shape, xxh64 checksum; written once at creation, never modified
 *       512  commit slot 0 (64 B)  } alternate: commit n goes to slot n&1; the valid
 *       1024 commit slot 1 (64 B)  } slot (magic + checksum) with the highest seq wins
 *   [4096, end)  records, back to back, each a multiple of 64 bytes:
 *       rec_hdr (64 B): key, L, codec, sizes, payload checksum, header checksum
 *       feature float[feat_dim], zero-padded to 64
 *       (format 2 with FLAG_TOKENS) token ids int32[L], zero-padded to 64
 *       n_layer*n_head maps of map_bytes each (codec.h layouts, 64-padded)
 *   [end, size)  uncommitted tail (a killed writer's partial append): ignored by
 *                readers, truncated by the next writer, unless the other commit
 *                slot is damaged: then it may hold the newest commit's records,
 *                and writers refuse until ac_store_repair (check_other_slot).
 * Commit protocol: write records past `end`; fdatasync; write slot (seq+1)&1 with
 * the new end; fdatasync. A torn slot fails its checksum and the other slot (the
 * previous commit) is used. Checksums are seeded with the record's file offset. */
#define _GNU_SOURCE
#include "cache/store.h"
#include "cache/hash.h"
#include "util/atomic_file.h"
#include "util/common.h"
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sched.h>
#include <stdarg.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define HDR_PAGE 4096u
#define SLOT_OFF0 512u
#define SLOT_OFF1 1024u
#define REC_HDR 64u
#define REC_MAGIC 0x31434552u  /* "REC1" */
#define SLOT_MAGIC 0x31544D43u /* "CMT1" */
#define MAX_LAYER 4096
#define MAX_HEAD 4096
#define MAX_FEAT 65536
#define WBUF_MIN (4u << 20)
#define FLAG_TOKENS 1u /* records carry their token ids (format 2) */
#define RESERVE_MIN ((size_t)16 << 30) /* virtual address space reserved per mapping region */
#define OPEN_NO_COMMIT_OK (1 << 28)     /* internal (repair): open even when neither commit slot is valid */
#define SCAN_BUF (1u << 20)             /* pread chunk when checking records outside the mapping */
static const char FILE_MAGIC[8] = {'A', 'C', 'M', 'A', 'P', 'D', 'B', 0};

typedef struct file_hdr {
    char magic[8];
    uint32_t ver_major, ver_minor;
    uint32_t data_start; /* HDR_PAGE */
    uint32_t flags;      /* FLAG_TOKENS (format 2) */
    uint64_t fingerprint[2];
    uint32_t n_layer, n_head, causal, feat_dim;
    uint64_t created_unix;
    uint8_t reserved[56];
    uint64_t checksum; /* xxh64 of bytes [0, 120), seed 0 */
} file_hdr;

typedef struct commit_slot {
    uint32_t magic;
    uint32_t slot;
    uint64_t seq;
    uint64_t end;       /* committed end offset */
    uint64_t n_entries; /* records in [HDR_PAGE, end) */
    uint64_t reserved[3];
    uint64_t checksum; /* xxh64 of bytes [0, 56), seed = slot offset */
} commit_slot;

typedef struct rec_hdr {
    uint32_t magic;
    uint32_t hdr_bytes; /* 64 */
    uint64_t rec_bytes; /* whole record incl. header, multiple of 64 */
    uint64_t key;
    uint32_t n_tokens;
    uint16_t codec_kind;
    uint16_t causal;
    uint32_t topk;
    uint32_t n_maps;
    uint64_t map_bytes;
    uint64_t payload_hash; /* xxh64 of [64, rec_bytes), seed = record offset */
    uint64_t hdr_hash;     /* xxh64 of bytes [0, 56), seed = record offset */
} rec_hdr;

_Static_assert(sizeof(file_hdr) == 128, "file_hdr layout");
_Static_assert(sizeof(commit_slot) == 64, "commit_slot layout");
_Static_assert(sizeof(rec_hdr) == REC_HDR, "rec_hdr layout");

enum { V_UNCHECKED = 0, V_OK = 1, V_BAD = 2 };

typedef struct ent {
    uint64_t off, key, rec_bytes, map_bytes;
    uint32_t L, topk;
    uint8_t kind, causal, vstate;
} ent;

typedef struct region { /* reserved address space; the file is mapped at its start */
    uint8_t *base;
    size_t reserved, mapped;
} region;

struct ac_store {
    char *path;
    int fd;
    int flags;
    int writable;
    int poisoned; /* a failed fsync/commit write: writes refused until reopen */
    ac_store_params p;
    uint32_t n_maps;
    uint64_t feat_bytes; /* feature bytes padded to 64 */
    int tokens;          /* records carry int32[L] token ids after the feature */
    int format;          /* file format major version (1 or 2) */
    int cur_tokens;      /* the entry in progress has its token ids */
    region *rg;          /* [n_rg]; the last one is current */
    int n_rg;
    /* committed state */
    uint64_t seq, end;
    int64_t n;    /* visible entries */
    ent *ents;    /* [n + n_pending] */
    int64_t cap;
    int64_t *ht;  /* [ht_cap] key -> entry index, -1 empty (open addressing) */
    size_t ht_cap;
    int damaged;
    uint64_t damage_off;
    char damage_msg[512];
    char slot_msg[512];   /* a damaged commit slot that cost nothing (an older commit); "" if none */
    int64_t lost_n;       /* intact records past the last readable commit (a damaged newest slot) */
    uint64_t lost_bytes;
    /* writer */
    uint64_t append_off; /* where the next record starts */
    int64_t n_pending;   /* finished, uncommitted entries at ents[n..) */
    int in_entry;
    ent cur;
    uint32_t next_map;
    ac_xxh64_state hs;
    uint8_t *wbuf; /* [wcap] payload bytes not yet written, file offset wbuf_off */
    size_t wcap, wlen;
    uint64_t wbuf_off;
    int wrote_any; /* the entry in progress wrote to the file */
};

/* ---- write hook ----------------------------------------------------------------------- */
static ac_store_pwrite_fn g_pwrite = NULL;
void ac_store_set_pwrite_hook(ac_store_pwrite_fn fn) { g_pwrite = fn; }
static size_t g_reserve = 0;
void ac_store_set_reserve_hint(size_t bytes) { g_reserve = bytes; }

/* Write all n bytes at off. 0, or -1 with errno set. */
static int pwrite_all(int fd, const void *buf, size_t n, uint64_t off) {
    const uint8_t *p = (const uint8_t *)buf;
    while (n > 0) {
        size_t chunk = n > (1u << 30) ? (1u << 30) : n;
        ssize_t w = g_pwrite ? g_pwrite(fd, p, chunk, (off_t)off) : pwrite(fd, p, chunk, (off_t)off);
        if (w < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        if (w == 0) {
            errno = ENOSPC;
            return -1;
        }
        p += w;
        n -= (size_t)w;
        off += (uint64_t)w;
    }
    return 0;
}

static int pread_all(int fd, void *buf, size_t n, uint64_t off) {
    uint8_t *p = (uint8_t *)buf;
    while (n > 0) {
        ssize_t r = pread(fd, p, n, (off_t)off);
        if (r < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        if (r == 0) {
            errno = EIO; /* short file */
            return -1;
        }
        p += r;
        n -= (size_t)r;
        off += (uint64_t)r;
    }
    return 0;
}

static inline uint64_t pad64(uint64_t x) { return (x + 63) & ~(uint64_t)63; }

static int sync_fd(ac_store *st) {
    if (st->flags & AC_STORE_NOSYNC) return 0;
    return fdatasync(st->fd);
}

/* ---- key hash table ------------------------------------------------------------------- */
static inline size_t key_slot(uint64_t key, size_t cap) {
    key ^= key >> 33;
    key *= 0xff51afd7ed558ccdULL;
    key ^= key >> 33;
    return (size_t)key & (cap - 1);
}

static int64_t ht_lookup(const ac_store *st, uint64_t key) {
    if (!st->ht_cap) return -1;
    for (size_t s = key_slot(key, st->ht_cap);; s = (s + 1) & (st->ht_cap - 1)) {
        int64_t i = st->ht[s];
        if (i < 0) return -1;
        if (st->ents[i].key == key) return i;
    }
}

/* Insert (or repoint, for a duplicate key in a hostile file) key -> i. */
static int ht_insert(ac_store *st, uint64_t key, int64_t i) {
    if ((size_t)(st->n + st->n_pending + 1) * 2 > st->ht_cap) {
        size_t nc = st->ht_cap ? st->ht_cap * 2 : 1024;
        while ((size_t)(st->n + st->n_pending + 1) * 2 > nc) nc *= 2;
        int64_t *nt = (int64_t *)AC_MALLOC(nc * sizeof(int64_t));
        if (!nt) return AC_ERR_NOMEM;
        for (size_t s = 0; s < nc; s++) nt[s] = -1;
        for (size_t s = 0; s < st->ht_cap; s++) {
            int64_t j = st->ht[s];
            if (j < 0) continue;
            size_t q = key_slot(st->ents[j].key, nc);
            while (nt[q] >= 0) q = (q + 1) & (nc - 1);
            nt[q] = j;
        }
        free(st->ht);
        st->ht = nt;
        st->ht_cap = nc;
    }
    size_t s = key_slot(key, st->ht_cap);
    while (st->ht[s] >= 0 && st->ents[st->ht[s]].key != key) s = (s + 1) & (st->ht_cap - 1);
    st->ht[s] = i;
    return AC_OK;
}

static int ents_reserve(ac_store *st, int64_t need) {
    if (need <= st->cap) return AC_OK;
    int64_t nc = st->cap ? st->cap * 2 : 256;
    while (nc < need) nc *= 2;
    ent *ne = (ent *)realloc(st->ents, (size_t)nc * sizeof(ent));
    if (!ne) return ac_err(AC_ERR_NOMEM, "store %s: out of memory for %lld entries", st->path, (long long)nc);
    st->ents = ne;
    st->cap = nc;
    return AC_OK;
}

/* ---- mapping --------------------------------------------------------------------------- */
/* Ensure [0, need) of the file is mapped (need <= file size). Earlier pointers
 * stay valid: the file is re-mapped in place inside a reserved region, or a
 * new region is started and the old one kept until close. */
static int map_extend(ac_store *st, uint64_t need) {
    region *r = st->n_rg ? &st->rg[st->n_rg - 1] : NULL;
    if (r && need <= r->mapped) return AC_OK;
    long pg = sysconf(_SC_PAGESIZE);
    size_t len = (size_t)((need + (uint64_t)pg - 1) & ~(uint64_t)(pg - 1));
    if (!r || len > r->reserved) {
        size_t res = g_reserve ? g_reserve : RESERVE_MIN;
        while (res < len) res *= 2;
        if (!g_reserve && res < 2 * len) res *= 2; /* room to grow in place */
        region *nr = (region *)realloc(st->rg, (size_t)(st->n_rg + 1) * sizeof(region));
        if (!nr) return ac_err(AC_ERR_NOMEM, "store %s: out of memory", st->path);
        st->rg = nr;
        void *b = mmap(NULL, res, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (b == MAP_FAILED)
            return ac_err(AC_ERR_IO, "store %s: cannot reserve %zu bytes of address space: %s", st->path, res,
                          strerror(errno));
        r = &st->rg[st->n_rg++];
        r->base = (uint8_t *)b;
        r->reserved = res;
        r->mapped = 0;
    }
    void *m = mmap(r->base, len, PROT_READ, MAP_SHARED | MAP_FIXED, st->fd, 0);
    if (m == MAP_FAILED)
        return ac_err(AC_ERR_IO, "store %s: mmap of %zu bytes failed: %s", st->path, len, strerror(errno));
    r->mapped = len;
    return AC_OK;
}

static inline const uint8_t *map_at(const ac_store *st, uint64_t off) {
    return st->rg[st->n_rg - 1].base + off;
}

/* ---- header ---------------------------------------------------------------------------- */
static uint64_t slot_offset(uint64_t seq) { return (seq & 1) ? SLOT_OFF1 : SLOT_OFF0; }

static void slot_fill(commit_slot *s, uint64_t seq, uint64_t end, uint64_t n) {
    memset(s, 0, sizeof *s);
    s->magic = SLOT_MAGIC;
    s->slot = (uint32_t)(seq & 1);
    s->seq = seq;
    s->end = end;
    s->n_entries = n;
    s->checksum = ac_xxh64(s, 56, slot_offset(seq));
}

static int slot_valid(const commit_slot *s, uint64_t off) {
    if (s->magic != SLOT_MAGIC || s->checksum != ac_xxh64(s, 56, off)) return 0;
    if (slot_offset(s->seq) != off || s->seq == 0) return 0;
    if (s->end < HDR_PAGE || (s->end & 63)) return 0;
    if (s->n_entries > (s->end - HDR_PAGE) / 64) return 0;
    return 1;
}

enum { SLOT_BLANK = 0, SLOT_VALID = 1, SLOT_DAMAGED = 2 };

/* Blank (never written: all zero), valid, or damaged (written, fails its checks). */
static int slot_state(const commit_slot *s, uint64_t off) {
    if (slot_valid(s, off)) return SLOT_VALID;
    static const commit_slot zero;
    return memcmp(s, &zero, sizeof zero) == 0 ? SLOT_BLANK : SLOT_DAMAGED;
}

/* 1 if a writer holds the database (its exclusive flock makes a shared try
 * fail). Asked only when a slot looks damaged: without a writer no slot write
 * can be in flight, so the damage is real and re-reading is pointless. */
static int writer_active(int fd) {
    if (flock(fd, LOCK_SH | LOCK_NB) == 0) {
        flock(fd, LOCK_UN);
        return 0;
    }
    return errno == EWOULDBLOCK;
}

/* Read both commit slots; *best = the valid one with the highest seq, *other
 * = the state of the slot not chosen (SLOT_*), *other_idx its index (0/1).
 * Returns 1 if a valid slot was found. A reader racing the writer may see the
 * slot being written torn: while a writer is active, retry a few times while a
 * slot looks damaged (also when both do: two commits inside one read) before
 * believing it. */
static int read_commit(ac_store *st, commit_slot *best, int *other, int *other_idx, int retries) {
    int found = 0;
    for (int attempt = 0; attempt <= retries; attempt++) {
        commit_slot s[2];
        if (pread_all(st->fd, &s[0], sizeof s[0], SLOT_OFF0) == 0 &&
            pread_all(st->fd, &s[1], sizeof s[1], SLOT_OFF1) == 0) {
            int v0 = slot_state(&s[0], SLOT_OFF0), v1 = slot_state(&s[1], SLOT_OFF1);
            if (v0 == SLOT_VALID || v1 == SLOT_VALID) {
                int b = (v0 == SLOT_VALID && (v1 != SLOT_VALID || s[0].seq > s[1].seq)) ? 0 : 1;
                *best = s[b];
                *other = b ? v0 : v1;
                *other_idx = !b;
                found = 1;
                if (*other != SLOT_DAMAGED) return 1;
            }
        }
        if (attempt < retries) {
            if (!writer_active(st->fd)) break;
            struct timespec ts = {0, 200000};
            nanosleep(&ts, NULL);
        }
    }
    return found;
}

static void set_damage(ac_store *st, uint64_t off, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void set_damage(ac_store *st, uint64_t off, const char *fmt, ...) {
    if (st->damaged) return;
    st->damaged = 1;
    st->damage_off = off;
    char msg[240];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    snprintf(st->damage_msg, sizeof st->damage_msg, "%s: record at offset %llu: %s", st->path,
             (unsigned long long)off, msg);
}

/* Bytes of a record's token-id section (0 when the DB carries none). */
static uint64_t tok_bytes(const ac_store *st, int L) { return st->tokens ? pad64((uint64_t)L * 4) : 0; }

/* Expected record size from a header, or 0 if the header is inconsistent
 * (why in *why). */
static uint64_t rec_expected(const ac_store *st, const rec_hdr *h, ac_map_codec *codec, const char **why) {
    codec->kind = h->codec_kind;
    codec->causal = h->causal;
    codec->topk = (int)h->topk;
    if (h->hdr_bytes != REC_HDR) { *why = "bad header size"; return 0; }
    if (h->n_tokens < 1 || h->n_tokens > AC_CODEC_MAX_L) { *why = "token count out of range"; return 0; }
    if (h->codec_kind >= AC_CODEC_COUNT || h->causal > 1) { *why = "unknown codec"; return 0; }
    if (h->codec_kind == AC_CODEC_TOPK && (h->topk < 1 || h->topk > AC_CODEC_MAX_L)) { *why = "bad top-k"; return 0; }
    if (h->causal && !st->p.causal) { *why = "causal codec in a non-causal database"; return 0; }
    if (h->n_maps != st->n_maps) { *why = "map count disagrees with n_layer*n_head"; return 0; }
    size_t mb = ac_codec_map_bytes(codec, (int)h->n_tokens);
    if (!mb || mb != h->map_bytes) { *why = "map size disagrees with codec and token count"; return 0; }
    size_t maps;
    uint64_t total;
    if (!ac_mul_ok(mb, st->n_maps, &maps) ||
        __builtin_add_overflow((uint64_t)REC_HDR + st->feat_bytes + tok_bytes(st, (int)h->n_tokens), (uint64_t)maps, &total)) {
        *why = "record size overflows";
        return 0;
    }
    if (total != h->rec_bytes) { *why = "record size disagrees with its shape"; return 0; }
    return total;
}

/* Scan records in [st->end, limit) (limit <= mapped size), appending to the
 * table. Stops at the first bad record (damage). Returns AC_OK or NOMEM. */
static int scan(ac_store *st, uint64_t limit, uint64_t commit_end) {
    uint64_t off = st->end;
    while (off < limit) {
        if (limit - off < REC_HDR) {
            set_damage(st, off, "truncated record header (%llu bytes left)", (unsigned long long)(limit - off));
            break;
        }
        rec_hdr h;
        memcpy(&h, map_at(st, off), sizeof h);
        if (h.magic != REC_MAGIC || h.hdr_hash != ac_xxh64(&h, 56, off)) {
            set_damage(st, off, "record header checksum mismatch");
            break;
        }
        ac_map_codec c;
        const char *why = NULL;
        uint64_t total = rec_expected(st, &h, &c, &why);
        if (!total) {
            set_damage(st, off, "%s", why);
            break;
        }
        if (total > limit - off) {
            set_damage(st, off, "record of %llu bytes runs past the %s (%llu)", (unsigned long long)total,
                       limit < commit_end ? "end of the file" : "committed end", (unsigned long long)limit);
            break;
        }
        int rc = ents_reserve(st, st->n + 1);
        if (rc) return rc;
        ent *e = &st->ents[st->n];
        e->off = off;
        e->key = h.key;
        e->rec_bytes = total;
        e->map_bytes = h.map_bytes;
        e->L = h.n_tokens;
        e->topk = h.topk;
        e->kind = (uint8_t)h.codec_kind;
        e->causal = (uint8_t)h.causal;
        e->vstate = V_UNCHECKED;
        rc = ht_insert(st, h.key, st->n);
        if (rc) return rc;
        st->n++;
        off += total;
    }
    st->end = st->damaged ? st->damage_off : off;
    return AC_OK;
}

/* Take the commit `c` (newer than the current state) into the handle. */
static int apply_commit(ac_store *st, const commit_slot *c) {
    struct stat sb;
    if (fstat(st->fd, &sb) != 0) return ac_err(AC_ERR_IO, "store %s: fstat: %s", st->path, strerror(errno));
    uint64_t size = (uint64_t)sb.st_size;
    uint64_t limit = c->end;
    if (limit > size) {
        limit = size & ~(uint64_t)63;
        if (limit < st->end) limit = st->end;
    }
    if (limit > st->end) {
        int rc = map_extend(st, limit);
        if (rc) return rc;
    } else if (!st->n_rg) {
        int rc = map_extend(st, HDR_PAGE);
        if (rc) return rc;
    }
    int rc = scan(st, limit, c->end);
    if (rc) return rc;
    if (!st->damaged && c->end > size)
        set_damage(st, st->end, "file truncated: committed end %llu is past the file size %llu",
                   (unsigned long long)c->end, (unsigned long long)size);
    if (!st->damaged && (uint64_t)st->n != c->n_entries)
        set_damage(st, st->end, "commit says %llu entries, found %lld", (unsigned long long)c->n_entries,
                   (long long)st->n);
    st->seq = c->seq;
    return AC_OK;
}

/* The record at off in a file of `size` bytes, read with pread (it may lie
 * outside the mapping): its total size if the header and the payload
 * checksums (both seeded with off) hold and its shape is consistent, else 0.
 * *h (optional) receives the header. buf: [SCAN_BUF] scratch. */
static uint64_t record_at(ac_store *st, uint64_t off, uint64_t size, uint8_t *buf, rec_hdr *hout) {
    rec_hdr h;
    if (off > size || size - off < REC_HDR || pread_all(st->fd, &h, sizeof h, off) != 0) return 0;
    if (h.magic != REC_MAGIC || h.hdr_hash != ac_xxh64(&h, 56, off)) return 0;
    ac_map_codec c;
    const char *why = NULL;
    uint64_t total = rec_expected(st, &h, &c, &why);
    if (!total || total > size - off) return 0;
    ac_xxh64_state hs;
    ac_xxh64_init(&hs, off);
    for (uint64_t p = REC_HDR; p < total;) {
        size_t n = (size_t)AC_MIN((uint64_t)SCAN_BUF, total - p);
        if (pread_all(st->fd, buf, n, off + p) != 0) return 0;
        ac_xxh64_update(&hs, buf, n);
        p += n;
    }
    if (ac_xxh64_digest(&hs) != h.payload_hash) return 0;
    if (hout) *hout = h;
    return total;
}

/* After the commit in use was applied: judge the slot not chosen. A damaged
 * slot held either the commit after the one in use (the newest: its records
 * lie, intact, past the committed end) or the one before (nothing lost). The
 * first is damage (readers keep the older commit, writers refuse until
 * repair); the second a note that db verify reports. */
static int check_other_slot(ac_store *st, int other, int other_idx) {
    st->slot_msg[0] = 0;
    st->lost_n = 0;
    st->lost_bytes = 0;
    if (other != SLOT_DAMAGED) return AC_OK;
    const unsigned slot_off = other_idx ? SLOT_OFF1 : SLOT_OFF0;
    struct stat sb;
    if (fstat(st->fd, &sb) != 0) return ac_err(AC_ERR_IO, "store %s: fstat: %s", st->path, strerror(errno));
    int64_t n = 0;
    uint64_t off = st->end;
    if (!st->damaged) {
        uint8_t *buf = (uint8_t *)AC_MALLOC(SCAN_BUF);
        if (!buf) return AC_ERR_NOMEM;
        uint64_t t;
        while ((t = record_at(st, off, (uint64_t)sb.st_size, buf, NULL)) != 0) {
            n++;
            off += t;
        }
        free(buf);
    }
    if (n > 0) {
        st->lost_n = n;
        st->lost_bytes = off - st->end;
        st->damaged = 1;
        st->damage_off = st->end;
        snprintf(st->damage_msg, sizeof st->damage_msg,
                 "%s: commit slot %d (offset %u) is damaged: commit %llu, the newest (or one a killed writer "
                 "never finished), cannot be read; %lld intact "
                 "records (%llu bytes) past the end of commit %llu (offset %llu) are not served; "
                 "`attncache db repair` recovers them",
                 st->path, other_idx, slot_off, (unsigned long long)st->seq + 1, (long long)n,
                 (unsigned long long)st->lost_bytes, (unsigned long long)st->seq, (unsigned long long)st->end);
    } else {
        snprintf(st->slot_msg, sizeof st->slot_msg,
                 "%s: commit slot %d (offset %u) is damaged; it held commit %llu (older than commit %llu in use) or "
                 "one that never completed: no record is lost, and the next commit rewrites the slot",
                 st->path, other_idx, slot_off, st->seq ? (unsigned long long)st->seq - 1 : 0ULL,
                 (unsigned long long)st->seq);
    }
    return AC_OK;
}

/* ---- create ----------------------------------------------------------------------------- */
/* Create path atomically (temp file, fsync, link into place: never replaces
 * an existing file, so two racing creators agree on one). */
static int create_file(const char *path, const ac_store_params *p) {
    size_t n = strlen(path) + 32;
    char *tmp = (char *)AC_MALLOC(n);
    if (!tmp) return AC_ERR_NOMEM;
    snprintf(tmp, n, "%s.tmp.%ld", path, (long)getpid());
    int rc = AC_OK;
    uint8_t *page = (uint8_t *)calloc(1, HDR_PAGE);
    if (!page) { free(tmp); return ac_err(AC_ERR_NOMEM, "store %s: out of memory", path); }
    file_hdr h;
    memset(&h, 0, sizeof h);
    memcpy(h.magic, FILE_MAGIC, 8);
    h.ver_major = AC_STORE_VERSION_MAJOR;
    h.ver_minor = AC_STORE_VERSION_MINOR;
    h.flags = p->with_tokens ? FLAG_TOKENS : 0;
    h.data_start = HDR_PAGE;
    h.fingerprint[0] = p->fingerprint[0];
    h.fingerprint[1] = p->fingerprint[1];
    h.n_layer = (uint32_t)p->n_layer;
    h.n_head = (uint32_t)p->n_head;
    h.causal = (uint32_t)p->causal;
    h.feat_dim = (uint32_t)p->feat_dim;
    h.created_unix = (uint64_t)time(NULL);
    h.checksum = ac_xxh64(&h, 120, 0);
    memcpy(page, &h, sizeof h);
    commit_slot s;
    slot_fill(&s, 2, HDR_PAGE, 0); /* seq 2 -> slot 0 */
    memcpy(page + SLOT_OFF0, &s, sizeof s);
    int fd = open(tmp, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0644);
    if (fd < 0) {
        rc = ac_err(AC_ERR_IO, "store %s: cannot create %s: %s", path, tmp, strerror(errno));
        goto done;
    }
    if (pwrite_all(fd, page, HDR_PAGE, 0) != 0 || fsync(fd) != 0) {
        rc = ac_err(AC_ERR_IO, "store %s: writing the header of %s: %s", path, tmp, strerror(errno));
        close(fd);
        unlink(tmp);
        goto done;
    }
    close(fd);
    if (link(tmp, path) != 0 && errno != EEXIST) {
        rc = ac_err(AC_ERR_IO, "store %s: cannot link %s into place: %s", path, tmp, strerror(errno));
    }
    unlink(tmp);
    if (rc == AC_OK) ac_fsync_dir_of(path);
done:
    free(page);
    free(tmp);
    return rc;
}

/* ---- open / close ----------------------------------------------------------------------- */
static int check_params(const ac_store_params *p) {
    if (p->n_layer < 1 || p->n_layer > MAX_LAYER || p->n_head < 1 || p->n_head > MAX_HEAD)
        return ac_err(AC_ERR_ARG, "store: n_layer %d / n_head %d out of range 1..%d", p->n_layer, p->n_head, MAX_LAYER);
    if (p->causal != 0 && p->causal != 1) return ac_err(AC_ERR_ARG, "store: causal must be 0 or 1");
    if (p->feat_dim < 0 || p->feat_dim > MAX_FEAT)
        return ac_err(AC_ERR_ARG, "store: feat_dim %d out of range 0..%d", p->feat_dim, MAX_FEAT);
    return AC_OK;
}

void ac_store_close(ac_store *st) {
    if (!st) return;
    if (st->in_entry) ac_store_abort(st);
    for (int i = 0; i < st->n_rg; i++) munmap(st->rg[i].base, st->rg[i].reserved);
    if (st->fd >= 0) close(st->fd); /* releases the writer lock */
    free(st->rg);
    free(st->ents);
    free(st->ht);
    free(st->wbuf);
    free(st->path);
    free(st);
}

int ac_store_open(const char *path, const ac_store_params *params, int flags, ac_store **out) {
    int rc = AC_OK;
    if (!path || !out) return ac_err(AC_ERR_ARG, "store: NULL path or out");
    *out = NULL;
    int writable = (flags & AC_STORE_WRITE) != 0;
    if ((flags & AC_STORE_CREATE) && !writable) return ac_err(AC_ERR_ARG, "store %s: CREATE needs WRITE", path);
    if ((flags & AC_STORE_CREATE) && !params) return ac_err(AC_ERR_ARG, "store %s: CREATE needs params", path);
    if (params && (rc = check_params(params))) return ac_err_prefix(rc, "store %s", path);
    if (writable && (flags & AC_STORE_REPAIR) && access(path, F_OK) == 0 &&
        (rc = ac_store_repair(path, params, NULL, NULL, NULL)))
        return rc;
    flags &= ~AC_STORE_REPAIR;

    ac_store *st = (ac_store *)AC_CALLOC(1, sizeof *st);
    if (!st) return AC_ERR_NOMEM;
    st->fd = -1;
    st->flags = flags;
    st->writable = writable;
    st->path = strdup(path);
    if (!st->path) { rc = ac_err(AC_ERR_NOMEM, "store: out of memory"); goto fail; }

    if (flags & AC_STORE_CREATE) {
        struct stat sb;
        if (stat(path, &sb) != 0) {
            if (errno != ENOENT) { rc = ac_err(AC_ERR_IO, "store %s: stat: %s", path, strerror(errno)); goto fail; }
            if ((rc = create_file(path, params))) goto fail;
        }
    }
    st->fd = open(path, (writable ? O_RDWR : O_RDONLY) | O_CLOEXEC);
    if (st->fd < 0) { rc = ac_err(AC_ERR_IO, "store %s: cannot open: %s", path, strerror(errno)); goto fail; }
    /* a reader that found a damaged slot holds a shared lock for a moment
     * (writer_active): try a few times before calling the file locked */
    int locked = writable ? -1 : 0;
    for (int t = 0; writable && t < 5 && (locked = flock(st->fd, LOCK_EX | LOCK_NB)) != 0 && errno == EWOULDBLOCK; t++) {
        struct timespec ts = {0, 200000};
        nanosleep(&ts, NULL);
    }
    if (writable && locked != 0) {
        if (errno == EWOULDBLOCK)
            rc = ac_err(AC_ERR_CACHE, "store %s: locked by another writer (one writer at a time; readers are fine)", path);
        else
            rc = ac_err(AC_ERR_IO, "store %s: flock: %s", path, strerror(errno));
        goto fail;
    }
    struct stat sb;
    if (fstat(st->fd, &sb) != 0) { rc = ac_err(AC_ERR_IO, "store %s: fstat: %s", path, strerror(errno)); goto fail; }
    if (!S_ISREG(sb.st_mode)) { rc = ac_err(AC_ERR_FORMAT, "store %s: not a regular file", path); goto fail; }
    if ((uint64_t)sb.st_size < HDR_PAGE) {
        rc = ac_err(AC_ERR_FORMAT, "store %s: %lld bytes is too small for an attention-map database (header page is %u)",
                    path, (long long)sb.st_size, HDR_PAGE);
        goto fail;
    }
    file_hdr h;
    if (pread_all(st->fd, &h, sizeof h, 0) != 0) { rc = ac_err(AC_ERR_IO, "store %s: reading header: %s", path, strerror(errno)); goto fail; }
    if (memcmp(h.magic, FILE_MAGIC, 8) != 0) { rc = ac_err(AC_ERR_FORMAT, "store %s: not an attention-map database (bad magic)", path); goto fail; }
    if (h.checksum != ac_xxh64(&h, 120, 0)) { rc = ac_err(AC_ERR_FORMAT, "store %s: file header checksum mismatch (damaged header)", path); goto fail; }
    if ((h.ver_major != 1 && h.ver_major != AC_STORE_VERSION_MAJOR) || (h.flags & ~FLAG_TOKENS) ||
        (h.ver_major == 1 && h.flags)) {
        rc = ac_err(AC_ERR_FORMAT, "store %s: format version %u.%u, this build reads %d.x", path, h.ver_major, h.ver_minor,
                    AC_STORE_VERSION_MAJOR);
        if (h.ver_major == AC_STORE_VERSION_MAJOR || h.ver_major == 1)
            rc = ac_err(AC_ERR_FORMAT, "store %s: unknown header flags 0x%x (format %u.%u)", path, h.flags, h.ver_major,
                        h.ver_minor);
        goto fail;
    }
    st->p.fingerprint[0] = h.fingerprint[0];
    st->p.fingerprint[1] = h.fingerprint[1];
    st->p.n_layer = (int)h.n_layer;
    st->p.n_head = (int)h.n_head;
    st->p.causal = (int)h.causal;
    st->p.feat_dim = (int)h.feat_dim;
    st->p.with_tokens = st->tokens = (h.flags & FLAG_TOKENS) != 0;
    st->format = (int)h.ver_major;
    if (h.data_start != HDR_PAGE || h.n_layer > MAX_LAYER || h.n_head > MAX_HEAD || h.feat_dim > MAX_FEAT ||
        (rc = check_params(&st->p))) {
        rc = ac_err(AC_ERR_FORMAT, "store %s: header holds an impossible shape (n_layer %u, n_head %u, causal %u, feat_dim %u)",
                    path, h.n_layer, h.n_head, h.causal, h.feat_dim);
        goto fail;
    }
    if (params && (params->fingerprint[0] != h.fingerprint[0] || params->fingerprint[1] != h.fingerprint[1] ||
                   params->n_layer != st->p.n_layer || params->n_head != st->p.n_head ||
                   params->causal != st->p.causal || params->feat_dim != st->p.feat_dim)) {
        rc = ac_err(AC_ERR_CACHE,
                    "store %s: built for a different model: file has fingerprint %016llx%016llx n_layer %d n_head %d "
                    "causal %d feat_dim %d, caller has %016llx%016llx n_layer %d n_head %d causal %d feat_dim %d",
                    path, (unsigned long long)h.fingerprint[0], (unsigned long long)h.fingerprint[1], st->p.n_layer,
                    st->p.n_head, st->p.causal, st->p.feat_dim, (unsigned long long)params->fingerprint[0],
                    (unsigned long long)params->fingerprint[1], params->n_layer, params->n_head, params->causal,
                    params->feat_dim);
        goto fail;
    }
    st->n_maps = (uint32_t)(st->p.n_layer * st->p.n_head);
    st->feat_bytes = pad64((uint64_t)st->p.feat_dim * 4);

    commit_slot c;
    int other = SLOT_BLANK, other_idx = 1;
    if (!read_commit(st, &c, &other, &other_idx, writable || (flags & OPEN_NO_COMMIT_OK) ? 0 : 20)) {
        if (!(flags & OPEN_NO_COMMIT_OK)) {
            rc = ac_err(AC_ERR_FORMAT, "store %s: no valid commit record (both header slots damaged); "
                        "`attncache db repair` recovers the intact records", path);
            goto fail;
        }
        slot_fill(&c, 2, HDR_PAGE, 0); /* repair: start from an empty commit */
        c.seq = 0;
        snprintf(st->slot_msg, sizeof st->slot_msg, "%s: both commit slots are damaged", path);
    }
    st->end = HDR_PAGE;
    if ((rc = apply_commit(st, &c))) goto fail;
    if (c.seq && (rc = check_other_slot(st, other, other_idx))) goto fail;

    if (writable) {
        if (st->damaged) {
            rc = ac_err(AC_ERR_CACHE, "store %s: damaged (%s); readers still get the %lld entries before the damage; "
                        "run `attncache db repair` (ac_store_repair) to keep every intact record and write again",
                        path, st->damage_msg, (long long)st->n);
            goto fail;
        }
        /* drop an uncommitted tail (a killed writer's partial append) */
        if ((uint64_t)sb.st_size > st->end && ftruncate(st->fd, (off_t)st->end) != 0) {
            rc = ac_err(AC_ERR_IO, "store %s: cannot truncate the uncommitted tail: %s", path, strerror(errno));
            goto fail;
        }
        st->append_off = st->end;
        st->wcap = WBUF_MIN;
        st->wbuf = (uint8_t *)AC_ALIGNED_ALLOC(st->wcap);
        if (!st->wbuf) { rc = AC_ERR_NOMEM; goto fail; }
    }
    *out = st;
    return AC_OK;
fail:
    ac_store_close(st);
    return rc;
}

/* ---- repair ----------------------------------------------------------------------------- */
typedef struct found_rec {
    uint64_t off, bytes, key;
} found_rec;

static int cmp_found_key(const void *a, const void *b) {
    const found_rec *x = *(const found_rec *const *)a, *y = *(const found_rec *const *)b;
    if (x->key != y->key) return x->key < y->key ? -1 : 1;
    return x->off < y->off ? -1 : x->off > y->off; /* the first copy of a key wins */
}

/* Rewrite the records `r[0..n)` of `st` into a fresh file `dst` (offsets
 * change, so both checksums are recomputed), committed once. */
static int rewrite_records(ac_store *st, const found_rec *r, int64_t n, const char *dst) {
    int rc = create_file(dst, &st->p);
    if (rc) return rc;
    int fd = open(dst, O_RDWR | O_CLOEXEC);
    if (fd < 0) return ac_err(AC_ERR_IO, "store %s: cannot open %s: %s", st->path, dst, strerror(errno));
    uint8_t *buf = NULL;
    uint64_t cap = 0, out = HDR_PAGE;
    for (int64_t i = 0; i < n && !rc; i++) {
        if (r[i].bytes > cap) {
            free(buf);
            cap = r[i].bytes;
            buf = (uint8_t *)AC_MALLOC((size_t)cap);
            if (!buf) { rc = AC_ERR_NOMEM; break; }
        }
        if (pread_all(st->fd, buf, (size_t)r[i].bytes, r[i].off) != 0) {
            rc = ac_err(AC_ERR_IO, "store %s: reading the record at offset %llu: %s", st->path,
                        (unsigned long long)r[i].off, strerror(errno));
            break;
        }
        rec_hdr h;
        memcpy(&h, buf, sizeof h);
        if (h.payload_hash != ac_xxh64(buf + REC_HDR, (size_t)r[i].bytes - REC_HDR, r[i].off)) {
            rc = ac_err(AC_ERR_CACHE, "store %s: the record at offset %llu changed during the repair", st->path,
                        (unsigned long long)r[i].off);
            break;
        }
        h.payload_hash = ac_xxh64(buf + REC_HDR, (size_t)r[i].bytes - REC_HDR, out);
        h.hdr_hash = ac_xxh64(&h, 56, out);
        memcpy(buf, &h, sizeof h);
        if (pwrite_all(fd, buf, (size_t)r[i].bytes, out) != 0)
            rc = ac_err(AC_ERR_IO, "store %s: writing %s: %s", st->path, dst, strerror(errno));
        out += r[i].bytes;
    }
    commit_slot c;
    slot_fill(&c, 3, out, (uint64_t)n);
    if (!rc && (fdatasync(fd) != 0 || pwrite_all(fd, &c, sizeof c, slot_offset(3)) != 0 || fdatasync(fd) != 0))
        rc = ac_err(AC_ERR_IO, "store %s: committing %s: %s", st->path, dst, strerror(errno));
    free(buf);
    close(fd);
    if (rc) unlink(dst);
    return rc;
}

int ac_store_repair(const char *path, const ac_store_params *params, FILE *report, int64_t *n_entries, int *changed) {
    if (!path) return ac_err(AC_ERR_ARG, "store: NULL path");
    if (n_entries) *n_entries = 0;
    if (changed) *changed = 0;
    /* the writer lock first, so no commit lands between the scan and the repair */
    int lfd = open(path, O_RDWR | O_CLOEXEC);
    if (lfd < 0) return ac_err(AC_ERR_IO, "store %s: cannot open: %s", path, strerror(errno));
    if (flock(lfd, LOCK_EX | LOCK_NB) != 0) {
        int e = errno;
        close(lfd);
        if (e == EWOULDBLOCK) return ac_err(AC_ERR_CACHE, "store %s: locked by a writer; repair needs it alone", path);
        return ac_err(AC_ERR_IO, "store %s: flock: %s", path, strerror(e));
    }
    ac_store *st = NULL;
    found_rec *r = NULL, **byk = NULL;
    uint8_t *buf = NULL;
    char *tmp = NULL, *bak = NULL;
    int rc = ac_store_open(path, params, AC_STORE_READ | OPEN_NO_COMMIT_OK, &st);
    if (rc) goto done;
    struct stat sb;
    if (fstat(st->fd, &sb) != 0) { rc = ac_err(AC_ERR_IO, "store %s: fstat: %s", path, strerror(errno)); goto done; }
    const uint64_t size = (uint64_t)sb.st_size;
    /* every intact record in the file: records are 64-byte aligned and their
     * checksums are seeded with their offset, so a scan in 64-byte steps over
     * damaged bytes finds the next record and nothing else */
    int64_t n = 0, cap = 0, skipped = 0;
    uint64_t damaged_bytes = 0;
    buf = (uint8_t *)AC_MALLOC(SCAN_BUF);
    if (!buf) { rc = AC_ERR_NOMEM; goto done; }
    for (uint64_t off = HDR_PAGE; off < size;) {
        rec_hdr h;
        uint64_t t = record_at(st, off, size, buf, &h);
        if (!t) {
            off += 64;
            damaged_bytes += AC_MIN((uint64_t)64, size - (off - 64));
            continue;
        }
        if (n == cap) {
            cap = cap ? cap * 2 : 1024;
            found_rec *nr = (found_rec *)realloc(r, (size_t)cap * sizeof *r);
            if (!nr) { rc = ac_err(AC_ERR_NOMEM, "store %s: out of memory", path); goto done; }
            r = nr;
        }
        r[n++] = (found_rec){off, t, h.key};
        off += t;
    }
    /* a key stored twice (only in a damaged or hand-made file): keep the first */
    if (n > 1) {
        byk = (found_rec **)AC_MALLOC((size_t)n * sizeof *byk);
        if (!byk) { rc = AC_ERR_NOMEM; goto done; }
        for (int64_t i = 0; i < n; i++) byk[i] = &r[i];
        qsort(byk, (size_t)n, sizeof *byk, cmp_found_key);
        for (int64_t i = 1; i < n; i++)
            if (byk[i]->key == byk[i - 1]->key) byk[i]->bytes = 0; /* dropped */
        int64_t k = 0;
        for (int64_t i = 0; i < n; i++) {
            if (r[i].bytes) r[k++] = r[i];
            else skipped++;
        }
        n = k;
    }
    int chain = 1; /* the intact records lie back to back from the data start: commit them in place */
    uint64_t end = HDR_PAGE;
    for (int64_t i = 0; i < n && chain; i++) {
        if (r[i].off != end) chain = 0;
        end += r[i].bytes;
    }
    if (chain && n == st->n && end == st->end && !st->damaged && !st->slot_msg[0]) {
        if (report) fprintf(report, "repair: %s is intact (%lld entries, commit %llu): nothing to do\n", path,
                            (long long)st->n, (unsigned long long)st->seq);
        if (n_entries) *n_entries = n;
        goto done;
    }
    if (report) {
        if (st->damaged) fprintf(report, "repair: %s\n", st->damage_msg);
        if (st->slot_msg[0]) fprintf(report, "repair: %s\n", st->slot_msg);
        if (!st->damaged && !st->slot_msg[0])
            fprintf(report, "repair: %s: damaged records inside the committed data\n", path);
    }
    if (changed) *changed = 1;
    if (chain && n >= st->n) {
        /* two commits, so both slots end up valid (the damaged one rewritten) */
        commit_slot c;
        for (uint64_t q = 1; q <= 2 && !rc; q++) {
            slot_fill(&c, st->seq + q, end, (uint64_t)n);
            if (pwrite_all(lfd, &c, sizeof c, slot_offset(c.seq)) != 0 || fdatasync(lfd) != 0)
                rc = ac_err(AC_ERR_IO, "store %s: repair commit failed: %s", path, strerror(errno));
        }
        if (!rc && size > end && ftruncate(lfd, (off_t)end) != 0) { /* what lies past is no intact record */ }
        if (!rc && report)
            fprintf(report, "repair: committed %lld entries in place (commit %llu; %lld were readable before, %lld "
                    "recovered)\n", (long long)n, (unsigned long long)c.seq, (long long)st->n, (long long)(n - st->n));
    } else {
        /* holes (damaged records) inside the data: copy the intact records into a
         * new file and swap it in; the damaged original is kept beside it */
        size_t pl = strlen(path) + 64;
        tmp = (char *)AC_MALLOC(pl);
        bak = (char *)AC_MALLOC(pl);
        if (!tmp || !bak) { rc = AC_ERR_NOMEM; goto done; }
        snprintf(tmp, pl, "%s.repair.%ld", path, (long)getpid());
        snprintf(bak, pl, "%s.damaged.%lld", path, (long long)time(NULL));
        unlink(tmp);
        if ((rc = rewrite_records(st, r, n, tmp))) goto done;
        if (link(path, bak) != 0) {
            rc = ac_err(AC_ERR_IO, "store %s: cannot keep the damaged original as %s: %s", path, bak, strerror(errno));
            unlink(tmp);
            goto done;
        }
        int moved = 0; /* rename over path, then fsync of the directory */
        if ((rc = ac_rename_durable(tmp, path, &moved))) {
            if (!moved) unlink(bak); /* the damaged original is still in place (tmp is removed) */
            rc = ac_err_prefix(rc, "store %s: %s", path,
                               moved ? "the repaired copy is in place" : "cannot move the repaired copy into place");
            goto done;
        }
        if (report)
            fprintf(report, "repair: rewrote %s with the %lld intact records (%lld were readable before; %llu damaged "
                    "bytes and %lld duplicate keys left out); the damaged original is kept as %s\n", path, (long long)n,
                    (long long)st->n, (unsigned long long)damaged_bytes, (long long)skipped, bak);
    }
    if (!rc && n_entries) *n_entries = n;
done:
    ac_store_close(st);
    free(r);
    free(byk);
    free(buf);
    free(tmp);
    free(bak);
    close(lfd); /* releases the lock */
    return rc;
}

/* ---- compaction ------------------------------------------------------------------------- */
int ac_store_compact(const char *path, const ac_store_params *params, ac_store_choose_fn choose, void *user,
                     FILE *report, int64_t *n_kept, uint64_t *bytes_after) {
    if (!path || !choose) return ac_err(AC_ERR_ARG, "store compact: invalid argument");
    if (n_kept) *n_kept = 0;
    if (bytes_after) *bytes_after = 0;
    /* the writer lock for the whole compaction: no commit lands between the choice and the swap */
    int lfd = open(path, O_RDWR | O_CLOEXEC);
    if (lfd < 0) return ac_err(AC_ERR_IO, "store %s: cannot open: %s", path, strerror(errno));
    if (flock(lfd, LOCK_EX | LOCK_NB) != 0) {
        int e = errno;
        close(lfd);
        if (e == EWOULDBLOCK) return ac_err(AC_ERR_CACHE, "store %s: locked by a writer; compaction needs it alone", path);
        return ac_err(AC_ERR_IO, "store %s: flock: %s", path, strerror(e));
    }
    ac_store *st = NULL;
    uint64_t *keys = NULL, *bytes = NULL;
    uint8_t *keep = NULL;
    found_rec *r = NULL;
    char *tmp = NULL;
    int rc = ac_store_open(path, params, AC_STORE_READ, &st);
    if (rc) goto done;
    if (st->damaged || st->slot_msg[0]) {
        rc = ac_err(AC_ERR_CACHE, "store %s: damaged (%s); run `attncache db repair` before compacting", path,
                    st->damaged ? st->damage_msg : st->slot_msg);
        goto done;
    }
    const int64_t n = st->n;
    keys = (uint64_t *)AC_MALLOC((size_t)(n ? n : 1) * sizeof *keys);
    bytes = (uint64_t *)AC_MALLOC((size_t)(n ? n : 1) * sizeof *bytes);
    keep = (uint8_t *)calloc((size_t)(n ? n : 1), 1);
    r = (found_rec *)AC_MALLOC((size_t)(n ? n : 1) * sizeof *r);
    if (!keys || !bytes || !keep || !r) { rc = ac_err(AC_ERR_NOMEM, "store %s: out of memory", path); goto done; }
    for (int64_t i = 0; i < n; i++) {
        keys[i] = st->ents[i].key;
        bytes[i] = st->ents[i].rec_bytes;
    }
    if ((rc = choose(user, n, keys, bytes, keep))) goto done;
    int64_t k = 0;
    uint64_t out = HDR_PAGE;
    for (int64_t i = 0; i < n; i++)
        if (keep[i]) {
            r[k++] = (found_rec){st->ents[i].off, st->ents[i].rec_bytes, st->ents[i].key};
            out += st->ents[i].rec_bytes;
        }
    if (k == n) { /* nothing to evict: the file is left alone */
        if (report) fprintf(report, "compact: %s: all %lld entries kept, nothing to do\n", path, (long long)n);
        if (n_kept) *n_kept = n;
        if (bytes_after) *bytes_after = st->end;
        goto done;
    }
    /* the kept records go to a new file (fsync'd, committed once), which is renamed over the old:
     * a crash before the rename leaves the old store whole (and a stray temp file), after it the new */
    size_t pl = strlen(path) + 64;
    tmp = (char *)AC_MALLOC(pl);
    if (!tmp) { rc = AC_ERR_NOMEM; goto done; }
    snprintf(tmp, pl, "%s.compact.%ld", path, (long)getpid());
    unlink(tmp);
    if ((rc = rewrite_records(st, r, k, tmp))) goto done;
    int moved = 0; /* rename over path, then fsync of the directory */
    if ((rc = ac_rename_durable(tmp, path, &moved))) {
        rc = ac_err_prefix(rc, "store %s: %s", path,
                           moved ? "the compacted copy is in place" : "cannot move the compacted copy into place");
        goto done;
    }
    if (report)
        fprintf(report, "compact: %s: kept %lld of %lld entries (%llu -> %llu bytes)\n", path, (long long)k,
                (long long)n, (unsigned long long)st->end, (unsigned long long)out);
    if (n_kept) *n_kept = k;
    if (bytes_after) *bytes_after = out;
done:
    ac_store_close(st);
    free(keys);
    free(bytes);
    free(keep);
    free(r);
    free(tmp);
    close(lfd); /* releases the lock (on the old file, now unlinked) */
    return rc;
}

void ac_store_get_params(const ac_store *st, ac_store_params *p) { *p = st->p; }
int64_t ac_store_count(const ac_store *st) { return st->n; }
int ac_store_n_tokens(const ac_store *st, int64_t i) { return st && i >= 0 && i < st->n ? (int)st->ents[i].L : -1; }
const char *ac_store_damage(const ac_store *st) { return st->damaged ? st->damage_msg : NULL; }

int ac_store_refresh(ac_store *st, int64_t *n_new) {
    if (n_new) *n_new = 0;
    if (!st) return ac_err(AC_ERR_ARG, "store: NULL handle");
    if (st->writable || st->damaged) return AC_OK; /* the writer is current; damage stops progress */
    commit_slot c;
    int other = SLOT_BLANK, other_idx = 1;
    if (!read_commit(st, &c, &other, &other_idx, 50))
        return ac_err(AC_ERR_FORMAT, "store %s: no valid commit record (both header slots damaged)", st->path);
    if (c.seq == st->seq) return AC_OK;
    if (c.seq < st->seq || c.end < st->end || c.n_entries < (uint64_t)st->n)
        return ac_err(AC_ERR_CACHE, "store %s: the database went back (commit %llu -> %llu): repaired or replaced; reopen",
                      st->path, (unsigned long long)st->seq, (unsigned long long)c.seq);
    int64_t before = st->n;
    int rc = apply_commit(st, &c);
    if (!rc) rc = check_other_slot(st, other, other_idx);
    if (n_new) *n_new = st->n - before;
    return rc;
}

/* ---- reading ------------------------------------------------------------------------------- */
static int verify_payload(ac_store *st, ent *e) {
    const uint8_t *r = map_at(st, e->off);
    rec_hdr h;
    memcpy(&h, r, sizeof h);
    uint64_t hh = ac_xxh64(r + REC_HDR, e->rec_bytes - REC_HDR, e->off);
    return hh == h.payload_hash;
}

static void fill_entry(const ac_store *st, const ent *e, int64_t i, ac_store_entry *out) {
    const uint8_t *r = map_at(st, e->off);
    out->key = e->key;
    out->n_tokens = (int)e->L;
    out->codec.kind = e->kind;
    out->codec.causal = e->causal;
    out->codec.topk = (int)e->topk;
    out->feature = (const float *)(r + REC_HDR);
    out->tokens = st->tokens ? (const int32_t *)(r + REC_HDR + st->feat_bytes) : NULL;
    out->maps = r + REC_HDR + st->feat_bytes + tok_bytes(st, (int)e->L);
    out->map_bytes = (size_t)e->map_bytes;
    out->index = i;
    out->offset = e->off;
    rec_hdr h;
    memcpy(&h, r, sizeof h);
    out->payload_hash = h.payload_hash;
}

int ac_store_get(ac_store *st, int64_t i, ac_store_entry *out) {
    if (!st || !out) return ac_err(AC_ERR_ARG, "store: NULL argument");
    if (i < 0 || i >= st->n)
        return ac_err(AC_ERR_RANGE, "store %s: entry %lld out of range (%lld entries)", st->path, (long long)i, (long long)st->n);
    ent *e = &st->ents[i];
    /* vstate is atomic: readers of one handle may verify the same record at once (same result) */
    uint8_t vs = __atomic_load_n(&e->vstate, __ATOMIC_ACQUIRE);
    if (vs == V_UNCHECKED && !(st->flags & AC_STORE_NO_VERIFY)) {
        vs = verify_payload(st, e) ? V_OK : V_BAD;
        __atomic_store_n(&e->vstate, vs, __ATOMIC_RELEASE);
    }
    if (vs == V_BAD)
        return ac_err(AC_ERR_CACHE, "store %s: entry %lld (key %llu) at offset %llu: payload checksum mismatch (damaged record)",
                      st->path, (long long)i, (unsigned long long)e->key, (unsigned long long)e->off);
    fill_entry(st, e, i, out);
    return AC_OK;
}

int ac_store_find(ac_store *st, uint64_t key, ac_store_entry *out) {
    if (!st || !out) return ac_err(AC_ERR_ARG, "store: NULL argument");
    int64_t i = ht_lookup(st, key);
    if (i < 0 || i >= st->n) return AC_ERR_RANGE;
    return ac_store_get(st, i, out);
}

/* ---- writing ------------------------------------------------------------------------------- */
static int write_fail(ac_store *st, size_t n, uint64_t off) {
    int e = errno;
    int rc = ac_err(AC_ERR_IO, "store %s: write of %zu bytes at offset %llu failed: %s%s", st->path, n,
                    (unsigned long long)off, strerror(e),
                    (e == ENOSPC || e == EFBIG || e == EDQUOT) ? " (disk full / file size limit); entry dropped, committed entries intact" : "");
    ac_store_abort(st);
    errno = e;
    return rc;
}

static int flush_wbuf(ac_store *st) {
    if (!st->wlen) return AC_OK;
    st->wrote_any = 1;
    if (pwrite_all(st->fd, st->wbuf, st->wlen, st->wbuf_off) != 0) return write_fail(st, st->wlen, st->wbuf_off);
    ac_xxh64_update(&st->hs, st->wbuf, st->wlen);
    st->wbuf_off += st->wlen;
    st->wlen = 0;
    return AC_OK;
}

static int writer_ok(ac_store *st, const char *what) {
    if (!st) return ac_err(AC_ERR_ARG, "store: NULL handle");
    if (!st->writable) return ac_err(AC_ERR_ARG, "store %s: %s on a read-only handle", st->path, what);
    if (st->poisoned)
        return ac_err(AC_ERR_IO, "store %s: %s refused: an earlier commit failed to reach the disk; reopen the database",
                      st->path, what);
    return AC_OK;
}

int ac_store_begin(ac_store *st, uint64_t key, int n_tokens, const ac_map_codec *codec, const float *feature) {
    int rc = writer_ok(st, "begin");
    if (rc) return rc;
    if (st->in_entry) return ac_err(AC_ERR_ARG, "store %s: begin while entry key %llu is in progress", st->path,
                                    (unsigned long long)st->cur.key);
    if ((rc = ac_codec_check(codec, n_tokens))) return ac_err_prefix(rc, "store %s: key %llu", st->path, (unsigned long long)key);
    if (codec->causal && !st->p.causal)
        return ac_err(AC_ERR_ARG, "store %s: causal (lower-triangle) codec in a database of a non-causal model", st->path);
    if (!feature && st->p.feat_dim > 0) return ac_err(AC_ERR_ARG, "store %s: key %llu: NULL feature", st->path, (unsigned long long)key);
    if (ht_lookup(st, key) >= 0)
        return ac_err(AC_ERR_ARG, "store %s: key %llu is already in the database", st->path, (unsigned long long)key);
    size_t mb = ac_codec_map_bytes(codec, n_tokens), maps;
    uint64_t total;
    if (!ac_mul_ok(mb, st->n_maps, &maps) ||
        __builtin_add_overflow((uint64_t)REC_HDR + st->feat_bytes + tok_bytes(st, n_tokens), (uint64_t)maps, &total))
        return ac_err(AC_ERR_ARG, "store %s: entry too large", st->path);
    memset(&st->cur, 0, sizeof st->cur);
    st->cur.off = st->append_off;
    st->cur.key = key;
    st->cur.L = (uint32_t)n_tokens;
    st->cur.kind = (uint8_t)codec->kind;
    st->cur.causal = (uint8_t)codec->causal;
    st->cur.topk = codec->kind == AC_CODEC_TOPK ? (uint32_t)codec->topk : 0;
    st->cur.map_bytes = mb;
    st->cur.rec_bytes = total;
    st->next_map = 0;
    st->wrote_any = 0;
    ac_xxh64_init(&st->hs, st->cur.off);
    st->wbuf_off = st->cur.off + REC_HDR;
    /* wcap >= 4 MiB >= feat_bytes (MAX_FEAT*4) + token bytes (AC_CODEC_MAX_L*4) */
    st->wlen = (size_t)(st->feat_bytes + tok_bytes(st, n_tokens));
    memset(st->wbuf, 0, st->wlen);
    if (st->p.feat_dim > 0) memcpy(st->wbuf, feature, (size_t)st->p.feat_dim * sizeof(float));
    st->in_entry = 1;
    st->cur_tokens = 0;
    return AC_OK;
}

int ac_store_put_tokens(ac_store *st, const int32_t *tokens) {
    int rc = writer_ok(st, "put_tokens");
    if (rc) return rc;
    if (!st->in_entry || st->next_map || st->wbuf_off != st->cur.off + REC_HDR)
        return ac_err(AC_ERR_ARG, "store %s: put_tokens goes right after begin", st->path);
    if (!st->tokens) return ac_err(AC_ERR_ARG, "store %s: this database does not carry token ids", st->path);
    if (!tokens) return ac_err(AC_ERR_ARG, "store %s: NULL tokens", st->path);
    memcpy(st->wbuf + st->feat_bytes, tokens, (size_t)st->cur.L * sizeof *tokens);
    st->cur_tokens = 1;
    return AC_OK;
}

/* Room for `bytes` more in the write buffer (flushing / growing it). */
static int wbuf_room(ac_store *st, size_t bytes) {
    if (st->wlen + bytes <= st->wcap) return AC_OK;
    int rc = flush_wbuf(st);
    if (rc) return rc;
    if (bytes > st->wcap) {
        uint8_t *nb = (uint8_t *)AC_ALIGNED_ALLOC(bytes);
        if (!nb) { ac_store_abort(st); return AC_ERR_NOMEM; }
        free(st->wbuf);
        st->wbuf = nb;
        st->wcap = bytes;
    }
    return AC_OK;
}

static int check_map_order(ac_store *st, int layer, int head) {
    if (!st->in_entry) return ac_err(AC_ERR_ARG, "store %s: put_map without begin", st->path);
    if (layer < 0 || head < 0 || layer >= st->p.n_layer || head >= st->p.n_head ||
        (uint32_t)(layer * st->p.n_head + head) != st->next_map) {
        int rc = ac_err(AC_ERR_ARG, "store %s: key %llu: maps go in order; expected layer %u head %u, got layer %d head %d",
                        st->path, (unsigned long long)st->cur.key, st->next_map / (uint32_t)st->p.n_head,
                        st->next_map % (uint32_t)st->p.n_head, layer, head);
        ac_store_abort(st);
        return rc;
    }
    return AC_OK;
}

int ac_store_put_map(ac_store *st, int layer, int head, const float *P) {
    int rc = writer_ok(st, "put_map");
    if (rc || (rc = check_map_order(st, layer, head))) return rc;
    if ((rc = wbuf_room(st, (size_t)st->cur.map_bytes))) return rc;
    ac_map_codec c = {st->cur.kind, st->cur.causal, (int)st->cur.topk};
    if ((rc = ac_codec_encode(&c, P, (int)st->cur.L, st->wbuf + st->wlen))) {
        ac_err_prefix(rc, "store %s: key %llu layer %d head %d", st->path, (unsigned long long)st->cur.key, layer, head);
        ac_store_abort(st);
        return rc;
    }
    st->wlen += (size_t)st->cur.map_bytes;
    st->next_map++;
    return AC_OK;
}

int ac_store_put_map_encoded(ac_store *st, int layer, int head, const void *map, size_t bytes) {
    int rc = writer_ok(st, "put_map_encoded");
    if (rc || (rc = check_map_order(st, layer, head))) return rc;
    if (!map || bytes != st->cur.map_bytes) {
        rc = ac_err(AC_ERR_ARG, "store %s: key %llu: encoded map of %zu bytes, codec needs %llu", st->path,
                    (unsigned long long)st->cur.key, bytes, (unsigned long long)st->cur.map_bytes);
        ac_store_abort(st);
        return rc;
    }
    if ((rc = wbuf_room(st, bytes))) return rc;
    memcpy(st->wbuf + st->wlen, map, bytes);
    st->wlen += bytes;
    st->next_map++;
    return AC_OK;
}

void ac_store_abort(ac_store *st) {
    if (!st || !st->in_entry) return;
    st->in_entry = 0;
    st->wlen = 0;
    /* give back what the dropped entry wrote (best effort; readers never look past the commit) */
    if (st->wrote_any && ftruncate(st->fd, (off_t)st->append_off) != 0) { /* harmless: overwritten next time */ }
    st->wrote_any = 0;
}

int ac_store_end(ac_store *st) {
    int rc = writer_ok(st, "end");
    if (rc) return rc;
    if (!st->in_entry) return ac_err(AC_ERR_ARG, "store %s: end without begin", st->path);
    if (st->tokens && !st->cur_tokens) {
        rc = ac_err(AC_ERR_ARG, "store %s: key %llu: this database carries token ids; put_tokens was not called", st->path,
                    (unsigned long long)st->cur.key);
        ac_store_abort(st);
        return rc;
    }
    if (st->next_map != st->n_maps) {
        rc = ac_err(AC_ERR_ARG, "store %s: key %llu has %u of %u maps", st->path, (unsigned long long)st->cur.key,
                    st->next_map, st->n_maps);
        ac_store_abort(st);
        return rc;
    }
    if ((rc = flush_wbuf(st))) return rc;
    rec_hdr h;
    memset(&h, 0, sizeof h);
    h.magic = REC_MAGIC;
    h.hdr_bytes = REC_HDR;
    h.rec_bytes = st->cur.rec_bytes;
    h.key = st->cur.key;
    h.n_tokens = st->cur.L;
    h.codec_kind = st->cur.kind;
    h.causal = st->cur.causal;
    h.topk = st->cur.topk;
    h.n_maps = st->n_maps;
    h.map_bytes = st->cur.map_bytes;
    h.payload_hash = ac_xxh64_digest(&st->hs);
    h.hdr_hash = ac_xxh64(&h, 56, st->cur.off);
    st->wrote_any = 1;
    if (pwrite_all(st->fd, &h, sizeof h, st->cur.off) != 0) return write_fail(st, sizeof h, st->cur.off);
    if ((rc = ents_reserve(st, st->n + st->n_pending + 1))) { ac_store_abort(st); return rc; }
    int64_t idx = st->n + st->n_pending;
    st->ents[idx] = st->cur;
    st->ents[idx].vstate = V_UNCHECKED;
    if ((rc = ht_insert(st, st->cur.key, idx))) { ac_store_abort(st); return rc; }
    st->n_pending++;
    st->append_off = st->cur.off + st->cur.rec_bytes;
    st->in_entry = 0;
    return AC_OK;
}

int ac_store_commit(ac_store *st) {
    int rc = writer_ok(st, "commit");
    if (rc) return rc;
    if (!st->n_pending) return AC_OK;
    if (sync_fd(st) != 0) {
        st->poisoned = 1;
        return ac_err(AC_ERR_IO, "store %s: fdatasync before commit failed: %s; the %lld new entries are not committed",
                      st->path, strerror(errno), (long long)st->n_pending);
    }
    commit_slot s;
    slot_fill(&s, st->seq + 1, st->append_off, (uint64_t)(st->n + st->n_pending));
    if (pwrite_all(st->fd, &s, sizeof s, slot_offset(s.seq)) != 0 || sync_fd(st) != 0) {
        st->poisoned = 1;
        return ac_err(AC_ERR_IO, "store %s: writing commit %llu failed: %s; the previous commit stays in force",
                      st->path, (unsigned long long)s.seq, strerror(errno));
    }
    st->seq = s.seq;
    st->end = st->append_off;
    st->n += st->n_pending;
    st->n_pending = 0;
    return map_extend(st, st->end);
}

int ac_store_append(ac_store *st, uint64_t key, int n_tokens, const int32_t *tokens, const ac_map_codec *codec,
                    const float *feature, const float *maps) {
    int rc = ac_store_begin(st, key, n_tokens, codec, feature);
    if (rc) return rc;
    if (tokens && (rc = ac_store_put_tokens(st, tokens))) return rc;
    size_t LL = (size_t)n_tokens * (size_t)n_tokens;
    for (int l = 0; l < st->p.n_layer; l++)
        for (int h = 0; h < st->p.n_head; h++)
            if ((rc = ac_store_put_map(st, l, h, maps + ((size_t)l * st->p.n_head + h) * LL))) return rc;
    if ((rc = ac_store_end(st))) return rc;
    return ac_store_commit(st);
}

/* ---- stats / verify --------------------------------------------------------------------------- */
int ac_store_stats_get(const ac_store *st, ac_store_stats *s) {
    if (!st || !s) return ac_err(AC_ERR_ARG, "store: NULL argument");
    memset(s, 0, sizeof *s);
    struct stat sb;
    if (fstat(st->fd, &sb) == 0) s->file_bytes = (uint64_t)sb.st_size;
    s->entries = st->n;
    s->committed_bytes = st->end;
    s->commit_seq = st->seq;
    s->damaged = st->damaged;
    s->damage_offset = st->damage_off;
    s->slot_damaged = st->slot_msg[0] || st->lost_n;
    s->lost_entries = st->lost_n;
    s->lost_bytes = st->lost_bytes;
    for (int64_t i = 0; i < st->n; i++) {
        const ent *e = &st->ents[i];
        s->tokens += e->L;
        s->codec_entries[e->kind]++;
        s->codec_bytes[e->kind] += e->rec_bytes;
        s->codec_elements[e->kind] += (uint64_t)st->n_maps * e->L * e->L;
    }
    return AC_OK;
}

void ac_store_stats_print(const ac_store *st, FILE *f) {
    ac_store_stats s;
    if (ac_store_stats_get(st, &s) != AC_OK) return;
    fprintf(f, "database   %s (format %d%s)\n", st->path, st->format,
            st->tokens ? ", token ids kept" : ", no token ids: --rows prefix needs a rebuild");
    fprintf(f, "model      fingerprint %016llx%016llx  n_layer %d  n_head %d  causal %d  feat_dim %d\n",
            (unsigned long long)st->p.fingerprint[0], (unsigned long long)st->p.fingerprint[1], st->p.n_layer,
            st->p.n_head, st->p.causal, st->p.feat_dim);
    fprintf(f, "entries    %lld (commit %llu), tokens %llu\n", (long long)s.entries, (unsigned long long)s.commit_seq,
            (unsigned long long)s.tokens);
    fprintf(f, "bytes      file %llu, committed %llu\n", (unsigned long long)s.file_bytes,
            (unsigned long long)s.committed_bytes);
    for (int k = 0; k < AC_CODEC_COUNT; k++) {
        if (!s.codec_entries[k]) continue;
        fprintf(f, "codec %-5s %lld entries, %llu bytes, %llu elements, %.3f bytes/element\n", ac_codec_kind_name(k),
                (long long)s.codec_entries[k], (unsigned long long)s.codec_bytes[k],
                (unsigned long long)s.codec_elements[k], (double)s.codec_bytes[k] / (double)s.codec_elements[k]);
    }
    if (s.damaged) fprintf(f, "DAMAGED    %s\n", st->damage_msg);
    if (st->slot_msg[0]) fprintf(f, "WARNING    %s\n", st->slot_msg);
}

static int cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* TOPK rows: indices ascending and < the row's stored columns. */
static int topk_ok(const ent *e, const uint8_t *maps, uint32_t n_maps) {
    ac_map_codec c = {AC_CODEC_TOPK, e->causal, (int)e->topk};
    int L = (int)e->L;
    for (uint32_t m = 0; m < n_maps; m++) {
        const uint8_t *map = maps + (size_t)m * e->map_bytes;
        for (int t = 0; t < L; t++) {
            int n = ac_codec_row_n(&c, L, t), kk = AC_MIN(c.topk, n);
            const uint8_t *r = map + ac_codec_row_offset(&c, L, t);
            int prev = -1;
            for (int i = 0; i < kk; i++) {
                uint16_t j;
                memcpy(&j, r + 2 * (size_t)i, 2);
                if ((int)j <= prev || (int)j >= n) return 0;
                prev = j;
            }
        }
    }
    return 1;
}

int ac_store_verify(ac_store *st, int64_t *n_bad_out, FILE *report) {
    if (!st) return ac_err(AC_ERR_ARG, "store: NULL handle");
    int64_t n_bad = 0;
    char first[640] = "";
#define BAD(...)                                                                   \
    do {                                                                           \
        char m_[640];                                                              \
        snprintf(m_, sizeof m_, __VA_ARGS__);                                      \
        if (report) fprintf(report, "%s\n", m_);                                   \
        if (!n_bad) snprintf(first, sizeof first, "%s", m_);                       \
        n_bad++;                                                                   \
    } while (0)
    for (int64_t i = 0; i < st->n; i++) {
        ent *e = &st->ents[i];
        const uint8_t *r = map_at(st, e->off);
        rec_hdr h;
        memcpy(&h, r, sizeof h);
        ac_map_codec c;
        const char *why = "header checksum mismatch";
        if (h.magic != REC_MAGIC || h.hdr_hash != ac_xxh64(&h, 56, e->off) || !rec_expected(st, &h, &c, &why)) {
            BAD("%s: entry %lld at offset %llu: %s", st->path, (long long)i, (unsigned long long)e->off, why);
            e->vstate = V_BAD;
            continue;
        }
        if (!verify_payload(st, e)) {
            BAD("%s: entry %lld (key %llu) at offset %llu: payload checksum mismatch", st->path, (long long)i,
                (unsigned long long)e->key, (unsigned long long)e->off);
            e->vstate = V_BAD;
            continue;
        }
        if (e->kind == AC_CODEC_TOPK && !topk_ok(e, r + REC_HDR + st->feat_bytes + tok_bytes(st, (int)e->L), st->n_maps)) {
            BAD("%s: entry %lld (key %llu): top-k indices out of order or range", st->path, (long long)i,
                (unsigned long long)e->key);
            e->vstate = V_BAD;
            continue;
        }
        e->vstate = V_OK;
    }
    if (st->n > 1) {
        uint64_t *keys = (uint64_t *)AC_MALLOC((size_t)st->n * sizeof(uint64_t));
        if (!keys) return AC_ERR_NOMEM;
        for (int64_t i = 0; i < st->n; i++) keys[i] = st->ents[i].key;
        qsort(keys, (size_t)st->n, sizeof(uint64_t), cmp_u64);
        for (int64_t i = 1; i < st->n; i++)
            if (keys[i] == keys[i - 1]) BAD("%s: key %llu appears more than once", st->path, (unsigned long long)keys[i]);
        free(keys);
    }
    if (st->damaged) BAD("%s", st->damage_msg);
    if (st->slot_msg[0]) BAD("%s", st->slot_msg);
#undef BAD
    if (n_bad_out) *n_bad_out = n_bad;
    if (n_bad) return ac_err(AC_ERR_CACHE, "store verify: %lld problem(s); first: %s", (long long)n_bad, first);
    return AC_OK;
}
