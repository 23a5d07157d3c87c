/*
 * netif-ref: the C reference our driver's performance is compared against.
 *
 * It drives the same rings our driver uses — a 256-slot netif TX ring and a 256-slot netif RX
 * ring, each slot backed by its own 4096-byte data page (gref = slot index) — with Xen's own
 * <xen/io/ring.h> macros and <xen/io/netif.h> structs, and does the same per-frame work as our
 * two ends:
 *
 *   tx  front copies the frame into the slot pages, writes netif_tx_requests (a more_data chain
 *       when the frame spans pages; the first request's size is the whole frame), pushes; back
 *       copies each request out of shared memory, copies the bytes out of the pages into its
 *       receive buffer (what a grant copy does), answers every slot with a netif_tx_response,
 *       pushes; front consumes the responses, which frees the slots.
 *   rx  front keeps the ring full of netif_rx_requests (id = gref = slot); back copies the frame
 *       into the posted pages and answers with netif_rx_responses (status = fragment bytes,
 *       more_data on all but the last), pushes; front copies the bytes out into its own buffer
 *       and reposts the buffers.
 *
 * Modes:
 *   single   one thread alternates front and back in batches: the steady per-frame CPU cost.
 *   threads  front and back on two pthreads: throughput. A side with nothing to do spins
 *            briefly (50 µs: a wake-up costs 20-40 µs here), arms the ring's event index (final
 *            check) and blocks on a futex-backed "event channel" that the peer kicks only when
 *            the ring's notify rule says so — the discipline our ring workers follow.
 *   memcpy   the floor: the two copies per frame (into the slot pages and out again), the same
 *            stamping and checking, nothing else.
 *
 * Usage: netif-ref <single|threads|memcpy> <tx|rx> <frame_bytes> <frames> [check_every]
 * Prints one JSON line. Exit status 0 on success, 1 when the received data does not match
 * what was sent (or a protocol check failed), 2 on bad usage.
 *
 * Environment (for experiments; the defaults are what `bun run bench` measures):
 *   NETIF_REF_BATCH    frames per turn in single mode (default 32, as bench/ring-loop.ts)
 *   NETIF_REF_SPIN_NS  how long a side polls before blocking in threads mode (default 50000)
 *   NETIF_REF_FAULT    corrupt this frame on its way (tests use it to prove the check works)
 *
 * Data check. Every frame is one of NTEMPL pseudo-random templates with its sequence number
 * stamped into its first and last 8 bytes. The receiver checks both stamps of every frame
 * (catches lost, repeated, reordered or mis-assembled frames) and compares the whole frame with
 * the template every `check_every` frames (default 64; 1 = every frame). Sampling keeps the
 * check's cost out of the figures while still reading the copied bytes, so neither a bug nor
 * the optimiser can make the copies disappear unnoticed.
 *
 * Build: gcc -std=gnu11 -O2 -Wall -Wextra -fno-strict-aliasing -pthread netif-ref.c
 * gnu11 for the GNU statement expression in XEN_RING_NR_UNCONSUMED_REQUESTS.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <linux/futex.h>
#include <pthread.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

/*
 * Without __XEN_INTERFACE_VERSION__, ring.h maps xen_mb/xen_rmb/xen_wmb onto mb/rmb/wmb and
 * leaves those to us. In threads mode they are real inter-thread barriers, and single mode
 * runs the very same code so that its cost includes them:
 *   mb   a full fence (a locked instruction / mfence on x86): the push must make the new
 *        producer index visible before it reads the peer's event index, and the final check
 *        must publish the event index before it re-reads the producer index (store→load
 *        ordering, which x86 does not give for free).
 *   rmb  acquire: read the producer index before the slots it covers.
 *   wmb  release: write the slots before the producer index.
 * On x86 the last two cost nothing at run time but stop the compiler from reordering.
 */
#define mb() __atomic_thread_fence(__ATOMIC_SEQ_CST)
#define rmb() __atomic_thread_fence(__ATOMIC_ACQUIRE)
#define wmb() __atomic_thread_fence(__ATOMIC_RELEASE)

#include <xen/io/netif.h>
#include <xen/io/ring.h>

_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "netif-ref needs a little-endian host");

#define PAGE 4096u
#define NR_SLOTS 256u /* __CONST_RING_SIZE(netif_tx, 4096) == __CONST_RING_SIZE(netif_rx, 4096) */
#define MAX_FRAGS 16u /* ceil(65535 / 4096): within XEN_NETIF_NR_SLOTS_MIN (18) */
#define NTEMPL 8u     /* distinct frame contents, so a frame delivered twice is caught */
#define STAMP 8u      /* bytes of sequence number at each end of a frame */
#define MIN_FRAME (2u * STAMP)
#define CACHELINE 64

_Static_assert(__CONST_RING_SIZE(netif_tx, 4096) == NR_SLOTS, "TX ring is not 256 slots");
_Static_assert(__CONST_RING_SIZE(netif_rx, 4096) == NR_SLOTS, "RX ring is not 256 slots");

/* A poll in a spin loop: tell the CPU we are spinning, and make the compiler re-read the
 * ring (ring.h's fields are plain, not volatile). */
#define cpu_relax() __asm__ volatile("pause" ::: "memory")

/* A failed check ends the run: the figures of a run that moved wrong data mean nothing. */
static _Noreturn __attribute__((format(printf, 1, 2))) void fail(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fputs("netif-ref: ", stderr);
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
  exit(1);
}

/* Every payload copy goes through glibc's memcpy (the tuned, CPU-dispatched one a real
 * netback's grant copy or a kernel memcpy would compare with). Without the noipa wall, gcc
 * sees that a fragment is at most 4096 bytes into a page-aligned buffer and inlines some copy
 * sites as `rep movsq` but not others, which made the floor slower than the ring path. */
static __attribute__((noipa)) void copy_data(void *dst, const void *src, size_t n) { memcpy(dst, src, n); }

static double now_ns(clockid_t clock) {
  struct timespec ts;
  clock_gettime(clock, &ts);
  return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static void *alloc_pages(size_t bytes) {
  void *p = aligned_alloc(PAGE, bytes);
  if (!p) fail("out of memory (%zu bytes)", bytes);
  memset(p, 0, bytes); /* fault every page in now, not inside the timed loop */
  return p;
}

/* --------------------------------------------------------------------------------------------
 * The event channel between the two threads.
 *
 * `pending` is the channel's pending bit and the futex word. A kick sets it and makes the
 * futex system call only if the peer said it is asleep: the ring's notify rule decides whether
 * to kick at all; this only spares the syscall (~150 ns here) when nobody is waiting. Like a real event
 * channel, an event carries no news: a woken side always re-reads the ring.
 * ------------------------------------------------------------------------------------------ */

struct evtchn {
  _Alignas(CACHELINE) uint32_t pending;
  uint32_t sleeping;
};

/* Every sleep is bounded, so a lost wake-up shows up as a timeout count instead of a hang. */
#define MAX_SLEEP_NS 1000000000L

struct side_stats {
  uint64_t kicks;   /* notify rule said yes */
  uint64_t wakes;   /* ... and the peer was asleep: futex_wake */
  uint64_t sleeps;  /* futex_wait calls */
  uint64_t timeouts;
  double blocked_ns; /* wall time spent in block(): sleeping plus the wake-up latency */
};

static void kick(struct evtchn *ch, struct side_stats *st) {
  st->kicks++;
  /* seq_cst on both sides (here and in block) so that either the sleeper sees pending=1 or
   * we see sleeping=1: the Dekker pattern that makes the wake-up impossible to lose. */
  if (__atomic_exchange_n(&ch->pending, 1, __ATOMIC_SEQ_CST) == 0 &&
      __atomic_load_n(&ch->sleeping, __ATOMIC_SEQ_CST)) {
    st->wakes++;
    syscall(SYS_futex, &ch->pending, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
  }
}

/* Forget stale events before the final check: whatever they announced, the check sees. */
static void clear_pending(struct evtchn *ch) { __atomic_store_n(&ch->pending, 0, __ATOMIC_SEQ_CST); }

static void block(struct evtchn *ch, struct side_stats *st) {
  double t0 = now_ns(CLOCK_MONOTONIC);
  __atomic_store_n(&ch->sleeping, 1, __ATOMIC_SEQ_CST);
  while (__atomic_exchange_n(&ch->pending, 0, __ATOMIC_SEQ_CST) == 0) {
    struct timespec ts = {.tv_sec = 0, .tv_nsec = MAX_SLEEP_NS - 1};
    st->sleeps++;
    long r = syscall(SYS_futex, &ch->pending, FUTEX_WAIT_PRIVATE, 0, &ts, NULL, 0);
    if (r == -1 && errno == ETIMEDOUT) {
      st->timeouts++;
      break; /* re-read the ring anyway */
    }
  }
  __atomic_store_n(&ch->sleeping, 0, __ATOMIC_SEQ_CST);
  st->blocked_ns += now_ns(CLOCK_MONOTONIC) - t0;
}

/* --------------------------------------------------------------------------------------------
 * What one run moves: frame geometry, the sender's templates and the receiver's check.
 * ------------------------------------------------------------------------------------------ */

struct frames {
  unsigned size;          /* bytes per frame */
  unsigned nfrag;         /* slots per frame */
  uint64_t total;         /* frames to move */
  uint64_t check_every;   /* full comparison every this many frames */
  uint64_t fault;         /* frame to corrupt (NETIF_REF_FAULT), UINT64_MAX for none */
  uint8_t *templ[NTEMPL]; /* sender's frame buffers; bytes [STAMP, size-STAMP) never change */
};

static unsigned frag_len(const struct frames *fr, unsigned j) {
  unsigned off = j * PAGE;
  return fr->size - off < PAGE ? fr->size - off : PAGE;
}

/* The sender's part of a frame: stamp the sequence number, return the bytes to send. Only the
 * sender writes the stamps; the receiver compares only the middle, so threads never race. */
static const uint8_t *next_frame(const struct frames *fr, uint64_t seq) {
  uint8_t *f = fr->templ[seq % NTEMPL];
  memcpy(f, &seq, STAMP);
  memcpy(f + fr->size - STAMP, &seq, STAMP);
  return f;
}

/* Fault injection, for the test suite: flip a byte in the middle of frame `fault`'s first page
 * just before the receiver copies it out, as a data-path bug would. The check must catch it. */
static void maybe_corrupt(const struct frames *fr, uint64_t seq, uint8_t *first_page) {
  if (seq == fr->fault) first_page[frag_len(fr, 0) / 2] ^= 0x55;
}

struct receiver_check {
  uint64_t received; /* frames verified so far = expected sequence number of the next one */
  uint64_t compared; /* frames compared in full */
};

static void check_frame(const struct frames *fr, struct receiver_check *rc, const uint8_t *buf, unsigned len) {
  uint64_t seq = rc->received, head, tail;
  if (len != fr->size) fail("frame %" PRIu64 ": received %u bytes, sent %u", seq, len, fr->size);
  memcpy(&head, buf, STAMP);
  memcpy(&tail, buf + len - STAMP, STAMP);
  if (head != seq || tail != seq)
    fail("frame %" PRIu64 ": stamps %" PRIu64 "/%" PRIu64 " (lost, repeated or mis-assembled frame)", seq, head, tail);
  if (seq % fr->check_every == 0) {
    if (memcmp(buf + STAMP, fr->templ[seq % NTEMPL] + STAMP, len - 2 * STAMP) != 0)
      fail("frame %" PRIu64 ": payload differs from what was sent", seq);
    rc->compared++;
  }
  rc->received++;
}

/* --------------------------------------------------------------------------------------------
 * Shared memory: the two ring pages and the data pages (gref = slot index).
 * ------------------------------------------------------------------------------------------ */

struct shared {
  netif_tx_sring_t *tx_sring;
  netif_rx_sring_t *rx_sring;
  uint8_t *tx_pages; /* NR_SLOTS pages */
  uint8_t *rx_pages;
  struct evtchn to_front; /* the back kicks the front through this */
  struct evtchn to_back;
};

static uint8_t *page_of(uint8_t *pages, grant_ref_t gref) { return pages + (size_t)gref * PAGE; }

/* --------------------------------------------------------------------------------------------
 * TX: front sends, back receives.
 * ------------------------------------------------------------------------------------------ */

struct tx_front {
  _Alignas(CACHELINE) netif_tx_front_ring_t ring;
  struct shared *sh;
  const struct frames *fr;
  uint64_t sent;      /* frames written to the ring */
  uint64_t completed; /* slots answered */
  struct side_stats st;
};

struct tx_back {
  _Alignas(CACHELINE) netif_tx_back_ring_t ring;
  struct shared *sh;
  const struct frames *fr;
  uint8_t *buf; /* where a grant copy would put the frame */
  struct receiver_check rc;
  struct side_stats st;
};

/* Put up to `max` frames on the ring (as many as fit), push, kick if the back asked. */
static int tx_front_send(struct tx_front *f, uint64_t max) {
  const struct frames *fr = f->fr;
  uint64_t n = 0;
  while (n < max && f->sent < fr->total && RING_FREE_REQUESTS(&f->ring) >= fr->nfrag) {
    const uint8_t *src = next_frame(fr, f->sent);
    for (unsigned j = 0; j < fr->nfrag; j++) {
      RING_IDX i = f->ring.req_prod_pvt++;
      unsigned slot = i & (NR_SLOTS - 1), len = frag_len(fr, j);
      copy_data(page_of(f->sh->tx_pages, slot), src + j * PAGE, len);
      netif_tx_request_t *req = RING_GET_REQUEST(&f->ring, i);
      req->gref = slot;
      req->offset = 0;
      req->flags = j + 1 < fr->nfrag ? NETTXF_more_data : 0;
      req->id = slot;
      req->size = j == 0 ? fr->size : len; /* the first request carries the whole frame */
    }
    f->sent++;
    n++;
  }
  if (n == 0) return 0;
  int notify;
  RING_PUSH_REQUESTS_AND_CHECK_NOTIFY(&f->ring, notify);
  if (notify) kick(&f->sh->to_back, &f->st);
  return 1;
}

/* Consume the back's responses: each frees its slot. */
static int tx_front_reap(struct tx_front *f) {
  RING_IDX rp = f->ring.sring->rsp_prod;
  rmb(); /* the responses, then what they say */
  if (RING_RESPONSE_PROD_OVERFLOW(&f->ring, rp)) fail("tx: backend claims %u responses", rp - f->ring.rsp_cons);
  RING_IDX i = f->ring.rsp_cons;
  if (i == rp) return 0;
  for (; i != rp; i++) {
    netif_tx_response_t rsp;
    RING_COPY_RESPONSE(&f->ring, i, &rsp);
    if (rsp.status != NETIF_RSP_OKAY || rsp.id != (i & (NR_SLOTS - 1)))
      fail("tx: response %u: id %u status %d", i, rsp.id, rsp.status);
  }
  f->completed += rp - f->ring.rsp_cons;
  f->ring.rsp_cons = rp;
  return 1;
}

/* Take the complete packets that are on the ring now off it, copy them out, answer every
 * slot, push once, kick if the front asked. Like our back-tx worker, it works on one snapshot
 * of the producer index per call, so responses flow back while the front keeps producing. */
static int tx_back_receive(struct tx_back *b) {
  const struct frames *fr = b->fr;
  int moved = 0;
  unsigned avail = XEN_RING_NR_UNCONSUMED_REQUESTS(&b->ring);
  rmb(); /* the producer index, then the requests it covers */
  if (RING_REQUEST_PROD_OVERFLOW(&b->ring, b->ring.sring->req_prod)) fail("tx: frontend claims too many requests");
  while (avail > 0) {

    /* Copy the chain out of shared memory before trusting any of it. */
    netif_tx_request_t req[MAX_FRAGS];
    unsigned n = 0, others = 0;
    int complete = 0;
    while (n < avail && n < MAX_FRAGS) {
      RING_COPY_REQUEST(&b->ring, b->ring.req_cons + n, &req[n]);
      if (n > 0) others += req[n].size;
      if (!(req[n++].flags & NETTXF_more_data)) {
        complete = 1;
        break;
      }
    }
    if (!complete) {
      if (n == MAX_FRAGS) fail("tx: packet longer than %u slots", MAX_FRAGS);
      break; /* the rest of the chain is not pushed yet */
    }
    if (others >= req[0].size) fail("tx: fragments (%u) exceed packet size %u", others, req[0].size);

    unsigned off = 0;
    for (unsigned j = 0; j < n; j++) {
      unsigned len = j == 0 ? req[0].size - others : req[j].size;
      if (req[j].gref >= NR_SLOTS || req[j].offset + len > PAGE) fail("tx: bad request gref %u offset %u len %u", req[j].gref, req[j].offset, len);
      if (j == 0) maybe_corrupt(fr, b->rc.received, page_of(b->sh->tx_pages, req[0].gref) + req[0].offset);
      copy_data(b->buf + off, page_of(b->sh->tx_pages, req[j].gref) + req[j].offset, len); /* the grant copy */
      off += len;
      netif_tx_response_t *rsp = RING_GET_RESPONSE(&b->ring, b->ring.rsp_prod_pvt++);
      rsp->id = req[j].id;
      rsp->status = NETIF_RSP_OKAY;
    }
    b->ring.req_cons += n;
    avail -= n;
    check_frame(fr, &b->rc, b->buf, off);
    moved = 1;
  }
  if (!moved) return 0;
  int notify;
  RING_PUSH_RESPONSES_AND_CHECK_NOTIFY(&b->ring, notify);
  if (notify) kick(&b->sh->to_front, &b->st);
  return 1;
}

/* --------------------------------------------------------------------------------------------
 * RX: back sends, front receives.
 * ------------------------------------------------------------------------------------------ */

struct rx_front {
  _Alignas(CACHELINE) netif_rx_front_ring_t ring;
  struct shared *sh;
  const struct frames *fr;
  uint8_t *buf;  /* the frame being assembled */
  unsigned have; /* bytes of it so far */
  struct receiver_check rc;
  struct side_stats st;
};

struct rx_back {
  _Alignas(CACHELINE) netif_rx_back_ring_t ring;
  struct shared *sh;
  const struct frames *fr;
  uint64_t sent;
  struct side_stats st;
};

static void rx_front_post(struct rx_front *f, uint16_t slot) {
  netif_rx_request_t *req = RING_GET_REQUEST(&f->ring, f->ring.req_prod_pvt++);
  req->id = slot;
  req->gref = slot;
}

static void rx_front_push(struct rx_front *f) {
  int notify;
  RING_PUSH_REQUESTS_AND_CHECK_NOTIFY(&f->ring, notify);
  if (notify) kick(&f->sh->to_back, &f->st);
}

/* Copy out every response's bytes, finish frames, repost the buffers. */
static int rx_front_receive(struct rx_front *f) {
  RING_IDX rp = f->ring.sring->rsp_prod;
  rmb();
  if (RING_RESPONSE_PROD_OVERFLOW(&f->ring, rp)) fail("rx: backend claims %u responses", rp - f->ring.rsp_cons);
  RING_IDX i = f->ring.rsp_cons;
  if (i == rp) return 0;
  for (; i != rp; i++) {
    netif_rx_response_t rsp;
    RING_COPY_RESPONSE(&f->ring, i, &rsp);
    if (rsp.id >= NR_SLOTS || rsp.status < 0 || rsp.offset + rsp.status > (int)PAGE || f->have + rsp.status > XEN_NETIF_MAX_TX_SIZE)
      fail("rx: response %u: id %u offset %u status %d", i, rsp.id, rsp.offset, rsp.status);
    if (f->have == 0) maybe_corrupt(f->fr, f->rc.received, page_of(f->sh->rx_pages, rsp.id) + rsp.offset);
    copy_data(f->buf + f->have, page_of(f->sh->rx_pages, rsp.id) + rsp.offset, rsp.status);
    f->have += rsp.status;
    if (!(rsp.flags & NETRXF_more_data)) {
      check_frame(f->fr, &f->rc, f->buf, f->have);
      f->have = 0;
    }
    rx_front_post(f, rsp.id); /* the buffer is free again: the same slot, as netfront assumes */
  }
  f->ring.rsp_cons = rp;
  rx_front_push(f);
  return 1;
}

/* Fill posted buffers with up to `max` frames (each needs nfrag buffers), push, kick if the
 * front asked. Returns whether it moved anything. */
static int rx_back_send(struct rx_back *b, uint64_t max) {
  const struct frames *fr = b->fr;
  uint64_t n = 0;
  while (n < max && b->sent < fr->total) {
    unsigned avail = XEN_RING_NR_UNCONSUMED_REQUESTS(&b->ring);
    if (avail < fr->nfrag) break;
    rmb();
    if (RING_REQUEST_PROD_OVERFLOW(&b->ring, b->ring.sring->req_prod)) fail("rx: frontend claims too many requests");
    const uint8_t *src = next_frame(fr, b->sent);
    for (unsigned j = 0; j < fr->nfrag; j++) {
      netif_rx_request_t req;
      RING_COPY_REQUEST(&b->ring, b->ring.req_cons++, &req);
      if (req.gref >= NR_SLOTS) fail("rx: request with gref %u", req.gref);
      unsigned len = frag_len(fr, j);
      copy_data(page_of(b->sh->rx_pages, req.gref), src + j * PAGE, len); /* the grant copy */
      netif_rx_response_t *rsp = RING_GET_RESPONSE(&b->ring, b->ring.rsp_prod_pvt++);
      rsp->id = req.id;
      rsp->offset = 0;
      rsp->flags = j + 1 < fr->nfrag ? NETRXF_more_data : 0;
      rsp->status = (int16_t)len;
    }
    b->sent++;
    n++;
  }
  if (n == 0) return 0;
  int notify;
  RING_PUSH_RESPONSES_AND_CHECK_NOTIFY(&b->ring, notify);
  if (notify) kick(&b->sh->to_front, &b->st);
  return 1;
}

/* --------------------------------------------------------------------------------------------
 * Threads mode: one loop per side. poll → spin → clear events → final check → block.
 * ------------------------------------------------------------------------------------------ */

/* How long a side with nothing to do polls before it blocks. Measured on these 2-vCPU KVM
 * guests: a futex wake-up takes ~2.5 µs while the sleeper's idle vCPU is still polling (guest
 * haltpoll), 20-25 µs once it has halted to the host; the peer needs up to ~20 µs to turn
 * round a full ring of 9014-byte frames. A side that gives up sooner sleeps once per batch and
 * the pair runs 5-12× slower (64 B: 190 instead of 15 ns/frame; 1514 B: 250 instead of 54).
 * 50 µs covers both, and wastes at most about what a block-and-wake costs. Set in time, not
 * polls, because a poll's cost varies (a `pause` is ~25 ns here, ~40 ns on Skylake). */
static double spin_ns = 50000;
static int go; /* the start line: both threads wait here, so thread creation is not timed */

/* One side's loop and the CPU time it used from the start line on (spinning included). */
struct thread_job {
  void (*loop)(void *);
  void *side;
  double cpu_ns;
};

static void *thread_main(void *arg) {
  struct thread_job *job = arg;
  while (!__atomic_load_n(&go, __ATOMIC_ACQUIRE)) cpu_relax();
  double c0 = now_ns(CLOCK_THREAD_CPUTIME_ID);
  job->loop(job->side);
  job->cpu_ns = now_ns(CLOCK_THREAD_CPUTIME_ID) - c0;
  return NULL;
}

/* Poll `ready` for up to spin_ns; whether it became ready. The clock is read every 16 polls
 * (a vDSO call, ~20 ns) so that the poll itself stays cheap. */
static int spin(int (*ready)(void *), void *side) {
  if (spin_ns <= 0) return 0;
  double deadline = now_ns(CLOCK_MONOTONIC) + spin_ns;
  for (unsigned i = 1;; i++) {
    cpu_relax();
    if (ready(side)) return 1;
    if ((i & 15) == 0 && now_ns(CLOCK_MONOTONIC) >= deadline) return 0;
  }
}

/* What each side waits for, and its final check. TX front, TX back and RX front use ring.h's
 * own macros (event index = consumer + 1, as our workers do); RX back asks to be woken only
 * once enough buffers for the next frame are posted (req_event = req_cons + need), as our
 * back-rx worker does. */
static int tx_front_ready(void *side) { return XEN_RING_NR_UNCONSUMED_RESPONSES(&((struct tx_front *)side)->ring) != 0; }
static int tx_back_ready(void *side) { return XEN_RING_NR_UNCONSUMED_REQUESTS(&((struct tx_back *)side)->ring) != 0; }
static int rx_front_ready(void *side) { return XEN_RING_NR_UNCONSUMED_RESPONSES(&((struct rx_front *)side)->ring) != 0; }
static int rx_back_ready(void *side) {
  struct rx_back *b = side;
  return XEN_RING_NR_UNCONSUMED_REQUESTS(&b->ring) >= b->fr->nfrag;
}

static int rx_back_final_check(struct rx_back *b) {
  unsigned need = b->fr->nfrag;
  if (XEN_RING_NR_UNCONSUMED_REQUESTS(&b->ring) >= need) return 1;
  b->ring.sring->req_event = b->ring.req_cons + need;
  mb();
  return XEN_RING_NR_UNCONSUMED_REQUESTS(&b->ring) >= need;
}

/* Each loop: work while there is work; then spin; then forget stale events, arm the event
 * index with the final check, and block only if the check still finds nothing. */

static void tx_front_loop(void *arg) {
  struct tx_front *f = arg;
  uint64_t slots = f->fr->total * f->fr->nfrag;
  while (f->completed < slots) {
    int moved = tx_front_reap(f);
    moved |= tx_front_send(f, UINT64_MAX);
    if (moved || spin(tx_front_ready, f)) continue;
    clear_pending(&f->sh->to_front);
    int work;
    RING_FINAL_CHECK_FOR_RESPONSES(&f->ring, work);
    if (!work) block(&f->sh->to_front, &f->st);
  }
}

static void tx_back_loop(void *arg) {
  struct tx_back *b = arg;
  while (b->rc.received < b->fr->total) {
    if (tx_back_receive(b) || spin(tx_back_ready, b)) continue;
    clear_pending(&b->sh->to_back);
    int work;
    RING_FINAL_CHECK_FOR_REQUESTS(&b->ring, work);
    if (!work) block(&b->sh->to_back, &b->st);
  }
}

static void rx_front_loop(void *arg) {
  struct rx_front *f = arg;
  while (f->rc.received < f->fr->total) {
    if (rx_front_receive(f) || spin(rx_front_ready, f)) continue;
    clear_pending(&f->sh->to_front);
    int work;
    RING_FINAL_CHECK_FOR_RESPONSES(&f->ring, work);
    if (!work) block(&f->sh->to_front, &f->st);
  }
}

static void rx_back_loop(void *arg) {
  struct rx_back *b = arg;
  while (b->sent < b->fr->total) {
    if (rx_back_send(b, UINT64_MAX) || spin(rx_back_ready, b)) continue;
    clear_pending(&b->sh->to_back);
    if (!rx_back_final_check(b)) block(&b->sh->to_back, &b->st);
  }
}

/* --------------------------------------------------------------------------------------------
 * Running a measurement.
 * ------------------------------------------------------------------------------------------ */

struct result {
  double wall_ns;
  double cpu_ns;
  uint64_t compared;
  struct side_stats front, back;
};

/* Run both sides on their own threads; wall time from the start line to the last join. */
static void run_threads(struct result *r, void (*front_loop)(void *), void *front, void (*back_loop)(void *), void *back) {
  struct thread_job jf = {front_loop, front, 0}, jb = {back_loop, back, 0};
  pthread_t tf, tb;
  __atomic_store_n(&go, 0, __ATOMIC_RELAXED);
  if (pthread_create(&tf, NULL, thread_main, &jf) || pthread_create(&tb, NULL, thread_main, &jb)) fail("pthread_create failed");
  usleep(1000); /* time for both threads to reach the start line */
  double t0 = now_ns(CLOCK_MONOTONIC);
  __atomic_store_n(&go, 1, __ATOMIC_RELEASE);
  pthread_join(tf, NULL);
  pthread_join(tb, NULL);
  r->wall_ns = now_ns(CLOCK_MONOTONIC) - t0;
  r->cpu_ns = jf.cpu_ns + jb.cpu_ns;
}

/* Single-thread work before the clock starts: every slot page touched, branches warmed. */
#define WARMUP_FRAMES 1024u

static struct result run_tx(struct shared *sh, struct frames *fr, int threaded, uint64_t batch) {
  SHARED_RING_INIT(sh->tx_sring);
  static struct tx_front f;
  static struct tx_back b;
  memset(&f, 0, sizeof f);
  memset(&b, 0, sizeof b);
  FRONT_RING_INIT(&f.ring, sh->tx_sring, PAGE);
  BACK_RING_INIT(&b.ring, sh->tx_sring, PAGE);
  f.sh = b.sh = sh;
  f.fr = b.fr = fr;
  b.buf = alloc_pages(XEN_NETIF_MAX_TX_SIZE + 1);
  struct result r = {0};

  if (threaded) {
    run_threads(&r, tx_front_loop, &f, tx_back_loop, &b);
  } else {
    uint64_t slots = fr->total * fr->nfrag, warm = fr->total < WARMUP_FRAMES ? fr->total : WARMUP_FRAMES;
    double t0 = 0, c0 = 0;
    int timing = 0;
    while (f.completed < slots) {
      if (!timing && f.completed >= warm * fr->nfrag) {
        timing = 1;
        t0 = now_ns(CLOCK_MONOTONIC);
        c0 = now_ns(CLOCK_THREAD_CPUTIME_ID);
      }
      tx_front_send(&f, batch);
      tx_back_receive(&b);
      tx_front_reap(&f);
    }
    r.wall_ns = now_ns(CLOCK_MONOTONIC) - t0;
    r.cpu_ns = now_ns(CLOCK_THREAD_CPUTIME_ID) - c0;
    if (!timing) r.wall_ns = r.cpu_ns = 0;
  }
  if (b.rc.received != fr->total || f.completed != fr->total * fr->nfrag) fail("tx: %" PRIu64 " frames received of %" PRIu64, b.rc.received, fr->total);
  r.compared = b.rc.compared;
  r.front = f.st;
  r.back = b.st;
  free(b.buf);
  return r;
}

static struct result run_rx(struct shared *sh, struct frames *fr, int threaded, uint64_t batch) {
  SHARED_RING_INIT(sh->rx_sring);
  static struct rx_front f;
  static struct rx_back b;
  memset(&f, 0, sizeof f);
  memset(&b, 0, sizeof b);
  FRONT_RING_INIT(&f.ring, sh->rx_sring, PAGE);
  BACK_RING_INIT(&b.ring, sh->rx_sring, PAGE);
  f.sh = b.sh = sh;
  f.fr = b.fr = fr;
  f.buf = alloc_pages(XEN_NETIF_MAX_TX_SIZE + 1);
  /* netfront keeps the ring full of buffers. */
  for (unsigned s = 0; s < NR_SLOTS; s++) rx_front_post(&f, s);
  rx_front_push(&f);
  f.st.kicks = 0; /* the initial fill is setup, not traffic */
  struct result r = {0};

  if (threaded) {
    run_threads(&r, rx_front_loop, &f, rx_back_loop, &b);
  } else {
    uint64_t warm = fr->total < WARMUP_FRAMES ? fr->total : WARMUP_FRAMES;
    double t0 = 0, c0 = 0;
    int timing = 0;
    while (f.rc.received < fr->total) {
      if (!timing && f.rc.received >= warm) {
        timing = 1;
        t0 = now_ns(CLOCK_MONOTONIC);
        c0 = now_ns(CLOCK_THREAD_CPUTIME_ID);
      }
      rx_back_send(&b, batch);
      rx_front_receive(&f);
    }
    r.wall_ns = now_ns(CLOCK_MONOTONIC) - t0;
    r.cpu_ns = now_ns(CLOCK_THREAD_CPUTIME_ID) - c0;
    if (!timing) r.wall_ns = r.cpu_ns = 0;
  }
  if (f.rc.received != fr->total || b.sent != fr->total) fail("rx: %" PRIu64 " frames received of %" PRIu64, f.rc.received, fr->total);
  r.compared = f.rc.compared;
  r.front = f.st;
  r.back = b.st;
  free(f.buf);
  return r;
}

/* The floor: the same two copies through the same rotating slot pages, in the same batches
 * as single mode (all copies in, then all copies out: copying a page out right after writing
 * it would stall on store forwarding and make the floor slower than the ring), the same
 * stamps and checks, no ring. */
static struct result run_memcpy(struct shared *sh, struct frames *fr, uint64_t batch) {
  uint8_t *buf = alloc_pages(XEN_NETIF_MAX_TX_SIZE + 1);
  struct receiver_check rc = {0};
  unsigned slot = 0;
  uint64_t warm = fr->total < WARMUP_FRAMES ? fr->total : WARMUP_FRAMES;
  double t0 = 0, c0 = 0;
  for (uint64_t seq = 0; seq < fr->total;) {
    if (seq >= warm && t0 == 0) {
      t0 = now_ns(CLOCK_MONOTONIC);
      c0 = now_ns(CLOCK_THREAD_CPUTIME_ID);
    }
    uint64_t n = fr->total - seq < batch ? fr->total - seq : batch;
    if (n * fr->nfrag > NR_SLOTS) n = NR_SLOTS / fr->nfrag;
    unsigned first = slot;
    for (uint64_t k = 0; k < n; k++) {
      const uint8_t *src = next_frame(fr, seq + k);
      for (unsigned j = 0; j < fr->nfrag; j++, slot = (slot + 1) & (NR_SLOTS - 1))
        copy_data(page_of(sh->tx_pages, slot), src + j * PAGE, frag_len(fr, j));
    }
    slot = first;
    for (uint64_t k = 0; k < n; k++) {
      maybe_corrupt(fr, seq + k, page_of(sh->tx_pages, slot));
      for (unsigned j = 0; j < fr->nfrag; j++, slot = (slot + 1) & (NR_SLOTS - 1))
        copy_data(buf + j * PAGE, page_of(sh->tx_pages, slot), frag_len(fr, j));
      check_frame(fr, &rc, buf, fr->size);
    }
    seq += n;
  }
  struct result r = {0};
  if (t0 > 0) {
    r.wall_ns = now_ns(CLOCK_MONOTONIC) - t0;
    r.cpu_ns = now_ns(CLOCK_THREAD_CPUTIME_ID) - c0;
  }
  r.compared = rc.compared;
  free(buf);
  return r;
}

static uint64_t env_u64(const char *name, uint64_t dflt, uint64_t lo, uint64_t hi) {
  const char *s = getenv(name);
  if (!s || !*s) return dflt;
  char *end;
  unsigned long long v = strtoull(s, &end, 10);
  if (*end || v < lo || v > hi) {
    fprintf(stderr, "netif-ref: %s must be an integer in [%" PRIu64 ", %" PRIu64 "]\n", name, lo, hi);
    exit(2);
  }
  return v;
}

static _Noreturn void usage(void) {
  fprintf(stderr,
          "usage: netif-ref <single|threads|memcpy> <tx|rx> <frame_bytes %u..%u> <frames> [check_every]\n",
          MIN_FRAME, XEN_NETIF_MAX_TX_SIZE);
  exit(2);
}

static uint64_t arg_u64(const char *s, uint64_t lo, uint64_t hi) {
  char *end;
  errno = 0;
  unsigned long long v = strtoull(s, &end, 10);
  if (errno || !*s || *end || v < lo || v > hi) usage();
  return v;
}

int main(int argc, char **argv) {
  if (argc < 5 || argc > 6) usage();
  const char *mode = argv[1], *dir = argv[2];
  int threaded = !strcmp(mode, "threads");
  if (!threaded && strcmp(mode, "single") && strcmp(mode, "memcpy")) usage();
  if (strcmp(dir, "tx") && strcmp(dir, "rx")) usage();

  struct frames fr = {0};
  fr.size = (unsigned)arg_u64(argv[3], MIN_FRAME, XEN_NETIF_MAX_TX_SIZE);
  fr.total = arg_u64(argv[4], 1, UINT64_MAX / MAX_FRAGS);
  fr.check_every = argc == 6 ? arg_u64(argv[5], 1, UINT64_MAX) : 64;
  fr.nfrag = (fr.size + PAGE - 1) / PAGE;
  fr.fault = env_u64("NETIF_REF_FAULT", UINT64_MAX, 0, UINT64_MAX);
  uint64_t batch = env_u64("NETIF_REF_BATCH", 32, 1, NR_SLOTS);
  spin_ns = (double)env_u64("NETIF_REF_SPIN_NS", 50000, 0, 1000000000);

  /* Pseudo-random template contents (xorshift): every byte position differs between
   * templates, so a misplaced or stale fragment cannot pass the comparison. */
  uint64_t x = 0x9e3779b97f4a7c15ull;
  for (unsigned t = 0; t < NTEMPL; t++) {
    fr.templ[t] = alloc_pages(fr.size);
    for (unsigned i = 0; i < fr.size; i++) {
      x ^= x << 13;
      x ^= x >> 7;
      x ^= x << 17;
      fr.templ[t][i] = (uint8_t)x;
    }
  }

  struct shared sh = {0};
  sh.tx_sring = alloc_pages(PAGE);
  sh.rx_sring = alloc_pages(PAGE);
  sh.tx_pages = alloc_pages((size_t)NR_SLOTS * PAGE);
  sh.rx_pages = alloc_pages((size_t)NR_SLOTS * PAGE);

  struct result r;
  uint64_t timed = fr.total;
  if (!strcmp(mode, "memcpy")) {
    r = run_memcpy(&sh, &fr, batch);
  } else {
    r = !strcmp(dir, "tx") ? run_tx(&sh, &fr, threaded, batch) : run_rx(&sh, &fr, threaded, batch);
  }
  /* Single and memcpy modes leave the warm-up frames out of the clock. */
  if (!threaded) timed = fr.total > WARMUP_FRAMES ? fr.total - WARMUP_FRAMES : 0;
  if (timed == 0 || r.wall_ns <= 0) fail("too few frames to time: give more than %u", WARMUP_FRAMES);

  double ns = r.wall_ns / (double)timed;
  double fps = 1e9 / ns;
  printf("{\"mode\":\"%s\",\"dir\":\"%s\",\"size\":%u,\"frames\":%" PRIu64 ",\"ns_per_frame\":%.3f,"
         "\"frames_per_s\":%.1f,\"gbit_s\":%.4f,\"cpu_ns_per_frame\":%.3f,\"timed_frames\":%" PRIu64
         ",\"checked\":true,\"compared\":%" PRIu64 ",\"batch\":%" PRIu64 ",\"spin_ns\":%.0f,"
         "\"front\":{\"kicks\":%" PRIu64 ",\"wakes\":%" PRIu64 ",\"sleeps\":%" PRIu64 ",\"timeouts\":%" PRIu64 ",\"blocked_ms\":%.3f},"
         "\"back\":{\"kicks\":%" PRIu64 ",\"wakes\":%" PRIu64 ",\"sleeps\":%" PRIu64 ",\"timeouts\":%" PRIu64 ",\"blocked_ms\":%.3f}}\n",
         mode, dir, fr.size, fr.total, ns, fps, fps * fr.size * 8 / 1e9, r.cpu_ns / (double)timed, timed, r.compared,
         threaded ? 0 : batch, threaded ? spin_ns : 0, r.front.kicks, r.front.wakes, r.front.sleeps,
         r.front.timeouts, r.front.blocked_ns / 1e6, r.back.kicks, r.back.wakes, r.back.sleeps, r.back.timeouts,
         r.back.blocked_ns / 1e6);
  for (unsigned t = 0; t < NTEMPL; t++) free(fr.templ[t]);
  free(sh.tx_sring);
  free(sh.rx_sring);
  free(sh.tx_pages);
  free(sh.rx_pages);
  return 0;
}
