/*
 * netif-check: the C half of test/c-crosscheck.test.ts.
 *
 * It is compiled against Xen's own public headers (<xen/io/netif.h>, <xen/io/ring.h>) so
 * that every answer it prints comes from the official struct definitions and ring macros,
 * never from a second hand-written copy of them. The TypeScript test runs the same inputs
 * through src/protocol and demands identical output, byte for byte.
 *
 *   netif-check layout   Prints "key value" lines: sizeof/offsetof of every struct we encode,
 *                        the shared-ring geometry and the protocol constants. Then reads
 *                        encode vectors from stdin (one per line, see encode_line) and prints
 *                        each struct's raw bytes in hex, one line per vector.
 *
 *   netif-check ring     Reads ring operations from stdin (see run_ring_op) and applies them
 *                        with the official ring macros to a TX and an RX ring, each in its own
 *                        4096-byte page. Prints exactly one line per operation.
 *
 * Build: gcc -std=gnu11 -O2 -Wall -Wextra -fno-strict-aliasing netif-check.c -o netif-check
 * gnu11: XEN_RING_NR_UNCONSUMED_REQUESTS uses a GNU statement expression.
 * -fno-strict-aliasing: extras are written and read by casting a ring slot to
 * netif_extra_info_t, exactly as netfront/netback do; Linux builds with this flag too.
 */
#define _GNU_SOURCE
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/*
 * Without __XEN_INTERFACE_VERSION__ the headers give the legacy interface, in which ring.h
 * maps xen_mb()/xen_rmb()/xen_wmb() onto mb()/rmb()/wmb() and expects the includer to
 * supply those. A full barrier is the strongest (and so always correct) choice; this
 * program is single-threaded, the barriers only have to compile.
 */
#define mb() __sync_synchronize()
#define rmb() __sync_synchronize()
#define wmb() __sync_synchronize()

#include <xen/io/netif.h>
#include <xen/io/ring.h>

/* The wire is little-endian and the TS codecs write little-endian; native C structs only
 * match that on a little-endian host, so refuse to build anywhere else. */
_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "netif-check needs a little-endian host");

#define PAGE 4096

static void die(const char *what, const char *line) {
  fprintf(stderr, "netif-check: %s: %s\n", what, line ? line : "");
  exit(2);
}

static void hex(const void *p, size_t n) {
  const uint8_t *b = p;
  for (size_t i = 0; i < n; i++) printf("%02x", b[i]);
}

/* ------------------------------------------------------------------------------------------
 * layout
 * ---------------------------------------------------------------------------------------- */

#define SIZE(T) printf("size." #T " %zu\n", sizeof(struct T))
#define OFF(T, F) printf("off." #T "." #F " %zu\n", offsetof(struct T, F))
#define FSIZE(T, F) printf("fsize." #T "." #F " %zu\n", sizeof(((struct T *)0)->F))
/* Constants are printed as signed long so NETIF_RSP_* keep their sign. */
#define CONST(C) printf("const." #C " %ld\n", (long)(C))

static void print_layout(void) {
  SIZE(netif_tx_request);
  OFF(netif_tx_request, gref);
  OFF(netif_tx_request, offset);
  OFF(netif_tx_request, flags);
  OFF(netif_tx_request, id);
  OFF(netif_tx_request, size);

  SIZE(netif_tx_response);
  OFF(netif_tx_response, id);
  OFF(netif_tx_response, status);

  SIZE(netif_rx_request);
  OFF(netif_rx_request, id);
  OFF(netif_rx_request, pad);
  OFF(netif_rx_request, gref);

  SIZE(netif_rx_response);
  OFF(netif_rx_response, id);
  OFF(netif_rx_response, offset);
  OFF(netif_rx_response, flags);
  OFF(netif_rx_response, status);

  SIZE(netif_extra_info);
  OFF(netif_extra_info, type);
  OFF(netif_extra_info, flags);
  OFF(netif_extra_info, u);
  FSIZE(netif_extra_info, u);
  OFF(netif_extra_info, u.gso.size);
  OFF(netif_extra_info, u.gso.type);
  OFF(netif_extra_info, u.gso.pad);
  OFF(netif_extra_info, u.gso.features);
  OFF(netif_extra_info, u.mcast.addr);
  FSIZE(netif_extra_info, u.mcast.addr);
  OFF(netif_extra_info, u.hash.type);
  OFF(netif_extra_info, u.hash.algorithm);
  OFF(netif_extra_info, u.hash.value);
  FSIZE(netif_extra_info, u.hash.value);

  /* The shared ring page, for both rings netif.h defines. */
#define SRING(R)                                                                          \
  do {                                                                                    \
    OFF(R##_sring, req_prod);                                                             \
    OFF(R##_sring, req_event);                                                            \
    OFF(R##_sring, rsp_prod);                                                             \
    OFF(R##_sring, rsp_event);                                                            \
    OFF(R##_sring, pvt);                                                                  \
    FSIZE(R##_sring, pvt);                                                                \
    OFF(R##_sring, pvt.netif.smartpoll_active);                                           \
    OFF(R##_sring, __pad);                                                                \
    FSIZE(R##_sring, __pad);                                                              \
    OFF(R##_sring, ring);                                                                 \
    FSIZE(R##_sring, ring[0]);                                                            \
    printf("ringsize.const." #R " %lu\n", (unsigned long)__CONST_RING_SIZE(R, PAGE));     \
  } while (0)
  SRING(netif_tx);
  SRING(netif_rx);
#undef SRING

  /* RING_SIZE as a live front ring computes it (__RING_SIZE from the page pointer). */
  {
    static union { netif_tx_sring_t s; uint8_t b[PAGE]; } txp __attribute__((aligned(PAGE)));
    static union { netif_rx_sring_t s; uint8_t b[PAGE]; } rxp __attribute__((aligned(PAGE)));
    netif_tx_front_ring_t tf;
    netif_rx_front_ring_t rf;
    /* Fill with garbage first: the test compares the header XEN_FRONT_RING_INIT leaves
     * against what FrontRing.init(0) leaves on an identically dirty page. */
    memset(txp.b, 0xa5, PAGE);
    memset(rxp.b, 0xa5, PAGE);
    XEN_FRONT_RING_INIT(&tf, &txp.s, PAGE);
    XEN_FRONT_RING_INIT(&rf, &rxp.s, PAGE);
    printf("ringsize.live.netif_tx %u\n", RING_SIZE(&tf));
    printf("ringsize.live.netif_rx %u\n", RING_SIZE(&rf));
    printf("init.netif_tx ");
    hex(txp.b, offsetof(netif_tx_sring_t, ring));
    printf("\n");
    printf("init.netif_rx ");
    hex(rxp.b, offsetof(netif_rx_sring_t, ring));
    printf("\n");
  }

  CONST(NETTXF_csum_blank);
  CONST(NETTXF_data_validated);
  CONST(NETTXF_more_data);
  CONST(NETTXF_extra_info);
  CONST(NETRXF_data_validated);
  CONST(NETRXF_csum_blank);
  CONST(NETRXF_more_data);
  CONST(NETRXF_extra_info);
  CONST(NETRXF_gso_prefix);
  CONST(NETIF_RSP_DROPPED);
  CONST(NETIF_RSP_ERROR);
  CONST(NETIF_RSP_OKAY);
  CONST(NETIF_RSP_NULL);
  CONST(XEN_NETIF_EXTRA_TYPE_NONE);
  CONST(XEN_NETIF_EXTRA_TYPE_GSO);
  CONST(XEN_NETIF_EXTRA_TYPE_MCAST_ADD);
  CONST(XEN_NETIF_EXTRA_TYPE_MCAST_DEL);
  CONST(XEN_NETIF_EXTRA_TYPE_HASH);
  CONST(XEN_NETIF_EXTRA_TYPE_MAX);
  CONST(XEN_NETIF_EXTRA_FLAG_MORE);
  CONST(XEN_NETIF_GSO_TYPE_NONE);
  CONST(XEN_NETIF_GSO_TYPE_TCPV4);
  CONST(XEN_NETIF_GSO_TYPE_TCPV6);
  CONST(XEN_NETIF_MAX_TX_SIZE);
  CONST(XEN_NETIF_NR_SLOTS_MIN);
}

/* ------------------------------------------------------------------------------------------
 * Slot tokens, shared by the encode vectors and the ring operations. One token is one slot,
 * fields separated by ':' and written in decimal:
 *
 *   q:gref:offset:flags:id:size       netif_tx_request
 *   s:id:status                       netif_tx_response
 *   Q:id:gref                         netif_rx_request
 *   S:id:offset:flags:status          netif_rx_response
 *   g:more:size:gsotype:features      netif_extra_info, GSO
 *   m:type:more:a0:a1:a2:a3:a4:a5     netif_extra_info, MCAST_ADD (2) / MCAST_DEL (3)
 *   h:more:hashtype:alg:value         netif_extra_info, HASH (value: a u32, see below)
 *
 * A decoded slot is printed in the same format, so the output is also readable as input.
 * ---------------------------------------------------------------------------------------- */

/* Every field is parsed into a long and range-checked by its assignment's caller. */
static int parse_fields(const char *tok, long *v, int max) {
  int n = 0;
  const char *p = tok + 1;
  while (*p == ':' && n < max) {
    char *end;
    v[n++] = strtol(p + 1, &end, 10);
    if (end == p + 1) return -1;
    p = end;
  }
  return *p == '\0' ? n : -1;
}

/* A slot's bytes as this program builds them: the struct the token names. */
typedef union {
  netif_tx_request_t txq;
  netif_tx_response_t txs;
  netif_rx_request_t rxq;
  netif_rx_response_t rxs;
  netif_extra_info_t x;
} slot_t;

/*
 * Build the struct a token describes, field by field through the C member names. Returns
 * its size (how many bytes the writer stores into a ring slot, exactly as Linux assigns a
 * whole struct), or 0 for a malformed token. Extras start zeroed because the TS encoder
 * zeroes the 8 bytes before writing the union member; every union member is 6 bytes, so
 * zeroing changes no byte that a field then writes.
 */
static size_t build_slot(const char *tok, slot_t *s) {
  long v[9];
  int n = parse_fields(tok, v, 9);
  memset(s, 0, sizeof *s);
  switch (tok[0]) {
  case 'q':
    if (n != 5) return 0;
    s->txq.gref = (grant_ref_t)v[0];
    s->txq.offset = (uint16_t)v[1];
    s->txq.flags = (uint16_t)v[2];
    s->txq.id = (uint16_t)v[3];
    s->txq.size = (uint16_t)v[4];
    return sizeof s->txq;
  case 's':
    if (n != 2) return 0;
    s->txs.id = (uint16_t)v[0];
    s->txs.status = (int16_t)v[1];
    return sizeof s->txs;
  case 'Q':
    if (n != 2) return 0;
    s->rxq.id = (uint16_t)v[0];
    s->rxq.pad = 0;
    s->rxq.gref = (grant_ref_t)v[1];
    return sizeof s->rxq;
  case 'S':
    if (n != 4) return 0;
    s->rxs.id = (uint16_t)v[0];
    s->rxs.offset = (uint16_t)v[1];
    s->rxs.flags = (uint16_t)v[2];
    s->rxs.status = (int16_t)v[3];
    return sizeof s->rxs;
  case 'g':
    if (n != 4) return 0;
    s->x.type = XEN_NETIF_EXTRA_TYPE_GSO;
    s->x.flags = v[0] ? XEN_NETIF_EXTRA_FLAG_MORE : 0;
    s->x.u.gso.size = (uint16_t)v[1];
    s->x.u.gso.type = (uint8_t)v[2];
    s->x.u.gso.pad = 0;
    s->x.u.gso.features = (uint16_t)v[3];
    return sizeof s->x;
  case 'm':
    if (n != 8) return 0;
    s->x.type = (uint8_t)v[0];
    s->x.flags = v[1] ? XEN_NETIF_EXTRA_FLAG_MORE : 0;
    for (int i = 0; i < 6; i++) s->x.u.mcast.addr[i] = (uint8_t)v[2 + i];
    return sizeof s->x;
  case 'h': {
    if (n != 4) return 0;
    /* hash.value is uint8_t[4]; Linux (netback sets, netfront reads) treats it as a native
     * u32 through a cast, which on the little-endian hosts Xen runs on is little-endian. */
    uint32_t value = (uint32_t)v[3];
    s->x.type = XEN_NETIF_EXTRA_TYPE_HASH;
    s->x.flags = v[0] ? XEN_NETIF_EXTRA_FLAG_MORE : 0;
    s->x.u.hash.type = (uint8_t)v[1];
    s->x.u.hash.algorithm = (uint8_t)v[2];
    memcpy(s->x.u.hash.value, &value, sizeof value);
    return sizeof s->x;
  }
  default:
    return 0;
  }
}

/* Print an extra-info slot as a token (g/m/h; any other type as "x:type:flags"). */
static void print_extra(const netif_extra_info_t *x) {
  switch (x->type) {
  case XEN_NETIF_EXTRA_TYPE_GSO:
    printf("g:%u:%u:%u:%u", x->flags, x->u.gso.size, x->u.gso.type, x->u.gso.features);
    break;
  case XEN_NETIF_EXTRA_TYPE_MCAST_ADD:
  case XEN_NETIF_EXTRA_TYPE_MCAST_DEL:
    printf("m:%u:%u", x->type, x->flags);
    for (int i = 0; i < 6; i++) printf(":%u", x->u.mcast.addr[i]);
    break;
  case XEN_NETIF_EXTRA_TYPE_HASH: {
    uint32_t value;
    memcpy(&value, x->u.hash.value, sizeof value);
    printf("h:%u:%u:%u:%u", x->flags, x->u.hash.type, x->u.hash.algorithm, value);
    break;
  }
  default:
    printf("x:%u:%u", x->type, x->flags);
  }
}

/* Encode vectors: one token per line on stdin; print the struct's bytes in hex. */
static void encode_vectors(void) {
  char *line = NULL;
  size_t cap = 0;
  ssize_t len;
  while ((len = getline(&line, &cap, stdin)) > 0) {
    if (line[len - 1] == '\n') line[--len] = '\0';
    if (len == 0) continue;
    slot_t s;
    size_t n = build_slot(line, &s);
    if (n == 0) die("bad encode vector", line);
    printf("bytes %s ", line);
    hex(&s, n);
    printf("\n");
  }
  free(line);
}

/* ------------------------------------------------------------------------------------------
 * ring
 * ---------------------------------------------------------------------------------------- */

/*
 * What kind of struct each slot index last received, per direction. A consumer prints a
 * slot through the struct its producer used (a request or an extra overlaid on it), so the
 * two programs must agree on that; each keeps its own record instead of trusting the input.
 */
enum { K_DATA = 0, K_EXTRA = 1 };

typedef struct {
  uint8_t *page;
  uint8_t req_kind[PAGE];
  uint8_t rsp_kind[PAGE];
} ring_t;

static union { netif_tx_sring_t s; uint8_t b[PAGE]; } tx_page __attribute__((aligned(PAGE)));
static union { netif_rx_sring_t s; uint8_t b[PAGE]; } rx_page __attribute__((aligned(PAGE)));
static netif_tx_front_ring_t tx_front;
static netif_tx_back_ring_t tx_back;
static netif_rx_front_ring_t rx_front;
static netif_rx_back_ring_t rx_back;

/*
 * Start both rings at `start` instead of 0, so a short run crosses the 2^32 index wrap.
 * SHARED_RING_INIT is the official initialisation (prods 0, events 1, pvt and pad zeroed);
 * the indices are then moved by the same offset on both sides, keeping the invariants the
 * macros expect (events = prods + 1; private indices = shared ones).
 */
static void ring_setup(RING_IDX start) {
  memset(tx_page.b, 0, PAGE);
  memset(rx_page.b, 0, PAGE);
#define SETUP(S, F, B)                                                                    \
  do {                                                                                    \
    SHARED_RING_INIT(S);                                                                  \
    (S)->req_prod = (S)->rsp_prod = start;                                                \
    (S)->req_event = (S)->rsp_event = start + 1;                                          \
    FRONT_RING_ATTACH(F, S, start, PAGE);                                                 \
    BACK_RING_ATTACH(B, S, start, PAGE);                                                  \
  } while (0)
  SETUP(&tx_page.s, &tx_front, &tx_back);
  SETUP(&rx_page.s, &rx_front, &rx_back);
#undef SETUP
}

static uint32_t fnv1a(const uint8_t *p, size_t n) {
  uint32_t h = 0x811c9dc5u;
  for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 0x01000193u;
  return h;
}

/*
 * The per-ring operations are the same code for TX and RX: a macro instantiates them for
 * each pair of (front, back) ring types, because the official macros are type-generic.
 *
 *   fw n tok...  front writes n requests (one token each) at req_prod_pvt
 *                -> "free=F" (RING_FREE_REQUESTS before writing)
 *   fp           RING_PUSH_REQUESTS_AND_CHECK_NOTIFY -> "notify=N req_prod=P"
 *   bc k         back: n = XEN_RING_NR_UNCONSUMED_REQUESTS; consume k with RING_COPY_REQUEST
 *                -> "n=N tok..." (the decoded copies)
 *   bw n tok...  back writes n responses at rsp_prod_pvt -> "pvt=P" (rsp_prod_pvt after)
 *   bp           RING_PUSH_RESPONSES_AND_CHECK_NOTIFY -> "notify=N rsp_prod=P"
 *   fc k         front: n = XEN_RING_NR_UNCONSUMED_RESPONSES; consume k with RING_COPY_RESPONSE
 *                -> "n=N tok..."
 *   ff           RING_FINAL_CHECK_FOR_RESPONSES -> "work=W rsp_event=E"
 *   bf           RING_FINAL_CHECK_FOR_REQUESTS  -> "work=W req_event=E"
 *   re v / se v  the peer sets req_event / rsp_event to v -> "ok"
 *   sum          -> "sum=<FNV-1a 32 of the page, hex>"
 *   hex          -> the whole page in hex
 *   state        -> "req_prod_pvt rsp_cons rsp_prod_pvt req_cons req_prod req_event rsp_prod rsp_event"
 */
#define DEFINE_RING_OP(FN, FRONT, BACK, REQ_T, RSP_T, REQ_M, RSP_M, REQ_C, RSP_C, PRINT_REQ, PRINT_RSP) \
  static void FN(ring_t *r, char *op, char *rest, const char *line) {                        \
    char *save = NULL;                                                                       \
    if (!strcmp(op, "fw") || !strcmp(op, "bw")) {                                            \
      int front = op[0] == 'f';                                                              \
      char *tok = strtok_r(rest, " ", &save);                                                \
      if (!tok) die("missing count", line);                                                  \
      long n = strtol(tok, NULL, 10);                                                        \
      if (front) printf("free=%u", RING_FREE_REQUESTS(FRONT));                               \
      for (long i = 0; i < n; i++) {                                                         \
        slot_t s;                                                                            \
        tok = strtok_r(NULL, " ", &save);                                                    \
        /* A data token must name this ring's request (front) or response (back) struct. */ \
        int kind = tok && strchr("gmh", tok[0]) ? K_EXTRA : K_DATA;                          \
        if (!tok || (kind == K_DATA && tok[0] != (front ? REQ_C : RSP_C)) || !build_slot(tok, &s)) \
          die("bad slot token", line);                                                       \
        if (front) {                                                                         \
          RING_IDX idx = (FRONT)->req_prod_pvt++;                                            \
          /* An extra overlays the request slot through a cast, as netfront writes it. */   \
          if (kind == K_EXTRA)                                                               \
            *(netif_extra_info_t *)RING_GET_REQUEST(FRONT, idx) = s.x;                       \
          else                                                                               \
            *RING_GET_REQUEST(FRONT, idx) = s.REQ_M;                                         \
          r->req_kind[idx & (RING_SIZE(FRONT) - 1)] = kind;                                  \
        } else {                                                                             \
          RING_IDX idx = (BACK)->rsp_prod_pvt++;                                             \
          if (kind == K_EXTRA)                                                               \
            *(netif_extra_info_t *)RING_GET_RESPONSE(BACK, idx) = s.x;                       \
          else                                                                               \
            *RING_GET_RESPONSE(BACK, idx) = s.RSP_M;                                         \
          r->rsp_kind[idx & (RING_SIZE(BACK) - 1)] = kind;                                   \
        }                                                                                    \
      }                                                                                      \
      if (!front) printf("pvt=%u", (BACK)->rsp_prod_pvt);                                    \
    } else if (!strcmp(op, "fp")) {                                                          \
      int notify;                                                                            \
      RING_PUSH_REQUESTS_AND_CHECK_NOTIFY(FRONT, notify);                                    \
      printf("notify=%d req_prod=%u", notify, (FRONT)->sring->req_prod);                     \
    } else if (!strcmp(op, "bp")) {                                                          \
      int notify;                                                                            \
      RING_PUSH_RESPONSES_AND_CHECK_NOTIFY(BACK, notify);                                    \
      printf("notify=%d rsp_prod=%u", notify, (BACK)->sring->rsp_prod);                      \
    } else if (!strcmp(op, "bc")) {                                                          \
      long k = strtol(rest, NULL, 10);                                                       \
      unsigned int n = XEN_RING_NR_UNCONSUMED_REQUESTS(BACK);                               \
      printf("n=%u", n);                                                                     \
      for (long i = 0; i < k; i++) {                                                         \
        RING_IDX idx = (BACK)->req_cons++;                                                   \
        putchar(' ');                                                                        \
        /* Copy out of the shared page first, then look: the copy is what Linux checks. */  \
        if (r->req_kind[idx & (RING_SIZE(BACK) - 1)] == K_EXTRA) {                           \
          netif_extra_info_t x;                                                              \
          RING_COPY_REQUEST(BACK, idx, &x);                                                  \
          print_extra(&x);                                                                   \
        } else {                                                                             \
          REQ_T q;                                                                           \
          RING_COPY_REQUEST(BACK, idx, &q);                                                  \
          PRINT_REQ;                                                                         \
        }                                                                                    \
      }                                                                                      \
    } else if (!strcmp(op, "fc")) {                                                          \
      long k = strtol(rest, NULL, 10);                                                       \
      unsigned int n = XEN_RING_NR_UNCONSUMED_RESPONSES(FRONT);                               \
      printf("n=%u", n);                                                                     \
      for (long i = 0; i < k; i++) {                                                         \
        RING_IDX idx = (FRONT)->rsp_cons++;                                                  \
        putchar(' ');                                                                        \
        if (r->rsp_kind[idx & (RING_SIZE(FRONT) - 1)] == K_EXTRA) {                          \
          netif_extra_info_t x;                                                              \
          RING_COPY_RESPONSE(FRONT, idx, &x);                                                \
          print_extra(&x);                                                                   \
        } else {                                                                             \
          RSP_T p;                                                                           \
          RING_COPY_RESPONSE(FRONT, idx, &p);                                                \
          PRINT_RSP;                                                                         \
        }                                                                                    \
      }                                                                                      \
    } else if (!strcmp(op, "ff")) {                                                          \
      int work;                                                                              \
      RING_FINAL_CHECK_FOR_RESPONSES(FRONT, work);                                           \
      printf("work=%d rsp_event=%u", !!work, (FRONT)->sring->rsp_event);                     \
    } else if (!strcmp(op, "bf")) {                                                          \
      int work;                                                                              \
      RING_FINAL_CHECK_FOR_REQUESTS(BACK, work);                                             \
      printf("work=%d req_event=%u", !!work, (BACK)->sring->req_event);                      \
    } else if (!strcmp(op, "re") || !strcmp(op, "se")) {                                     \
      RING_IDX v = (RING_IDX)strtoul(rest, NULL, 10);                                        \
      if (op[0] == 'r')                                                                      \
        (FRONT)->sring->req_event = v;                                                       \
      else                                                                                   \
        (FRONT)->sring->rsp_event = v;                                                       \
      printf("ok");                                                                          \
    } else if (!strcmp(op, "sum")) {                                                         \
      printf("sum=%08x", fnv1a(r->page, PAGE));                                              \
    } else if (!strcmp(op, "hex")) {                                                         \
      hex(r->page, PAGE);                                                                    \
    } else if (!strcmp(op, "state")) {                                                       \
      printf("%u %u %u %u %u %u %u %u", (FRONT)->req_prod_pvt, (FRONT)->rsp_cons,            \
             (BACK)->rsp_prod_pvt, (BACK)->req_cons, (FRONT)->sring->req_prod,               \
             (FRONT)->sring->req_event, (FRONT)->sring->rsp_prod, (FRONT)->sring->rsp_event); \
    } else {                                                                                 \
      die("unknown op", line);                                                               \
    }                                                                                        \
    putchar('\n');                                                                           \
  }

DEFINE_RING_OP(tx_op, &tx_front, &tx_back, netif_tx_request_t, netif_tx_response_t, txq, txs, 'q', 's',
               printf("q:%u:%u:%u:%u:%u", q.gref, q.offset, q.flags, q.id, q.size),
               printf("s:%u:%d", p.id, p.status))
DEFINE_RING_OP(rx_op, &rx_front, &rx_back, netif_rx_request_t, netif_rx_response_t, rxq, rxs, 'Q', 'S',
               printf("Q:%u:%u", q.id, q.gref),
               printf("S:%u:%u:%u:%d", p.id, p.offset, p.flags, p.status))

/*
 * Input: first line "start <u32>", then one operation per line, "<t|r> <op> [args]".
 * Output: "start <u32>", then one line per operation.
 */
static void run_ring(void) {
  static ring_t tx = {.page = tx_page.b};
  static ring_t rx = {.page = rx_page.b};
  char *line = NULL;
  size_t cap = 0;
  ssize_t len;
  unsigned long start;

  if (getline(&line, &cap, stdin) <= 0 || sscanf(line, "start %lu", &start) != 1) die("expected 'start <u32>'", line);
  ring_setup((RING_IDX)start);
  printf("start %u\n", (RING_IDX)start);

  while ((len = getline(&line, &cap, stdin)) > 0) {
    if (line[len - 1] == '\n') line[--len] = '\0';
    if (len == 0) continue;
    char *copy = strdup(line); /* strtok_r writes into the line; keep it for messages */
    char *save = NULL;
    char *which = strtok_r(line, " ", &save);
    char *op = strtok_r(NULL, " ", &save);
    char *rest = save ? save : (char *)"";
    if (!which || !op) die("bad line", copy);
    if (!strcmp(which, "t"))
      tx_op(&tx, op, rest, copy);
    else if (!strcmp(which, "r"))
      rx_op(&rx, op, rest, copy);
    else
      die("unknown ring", copy);
    free(copy);
  }
  free(line);
}

int main(int argc, char **argv) {
  /* Large output (100k+ lines): a full buffer instead of line buffering on a pipe. */
  static char obuf[1 << 16];
  setvbuf(stdout, obuf, _IOFBF, sizeof obuf);
  if (argc == 2 && !strcmp(argv[1], "layout")) {
    print_layout();
    encode_vectors();
  } else if (argc == 2 && !strcmp(argv[1], "ring")) {
    run_ring();
  } else {
    fprintf(stderr, "usage: %s layout|ring  (input on stdin)\n", argv[0]);
    return 2;
  }
  return fflush(stdout) == 0 ? 0 : 1;
}
