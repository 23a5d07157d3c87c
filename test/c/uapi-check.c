/*
 * uapi-check: the C half of test/xen-ioctl.test.ts and test/xen-xenstore-wire.test.ts.
 *
 * Compiled against the kernel's uapi headers for the Xen devices (<xen/evtchn.h>,
 * <xen/gntalloc.h>, <xen/gntdev.h>, from linux-libc-dev) and Xen's public headers
 * (<xen/grant_table.h>, <xen/io/xs_wire.h>, from libxen-dev), so every number it prints
 * comes from the official definitions. The TypeScript tests demand the same answers from
 * src/ffi/xen-ioctl.ts, src/ffi/errno.ts and src/platform/xen/xs-wire.ts.
 *
 *   uapi-check layout   "key value" lines: sizeof/offsetof of every ioctl struct we encode,
 *                       the ioctl request numbers, flag constants and GNTST_* codes. Then reads
 *                       vectors from stdin, one struct per line (see encode_line), fills the
 *                       struct with those field values and prints "bytes <hex>" of it.
 *
 *   uapi-check xs       "key value" lines: the xsd_sockmsg_type numbers, the xsd_sockmsg
 *                       layout, the payload and path limits, xsd_errors[] (name and number),
 *                       and the errno numbers of the names src/ffi/errno.ts knows. Then reads
 *                       "type req_id tx_id len" lines and prints "bytes <hex>" of the header.
 *
 * Build: gcc -std=gnu11 -O2 -Wall -Wextra uapi-check.c -o uapi-check
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h> /* _IOC, which the uapi headers use without including it */

#include <xen/xen.h>         /* domid_t */
#include <xen/grant_table.h> /* grant_ref_t, GNTCOPY_*, GNTST_* */
#include <xen/evtchn.h>
#include <xen/gntalloc.h>
#include <xen/gntdev.h>
#include <xen/io/xs_wire.h> /* after <errno.h>: xsd_errors[] only exists when EINVAL does */

_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "uapi-check needs a little-endian host");

static void die(const char *what, const char *line) {
  fprintf(stderr, "uapi-check: %s: %s\n", what, line ? line : "");
  exit(2);
}

static void hex(const void *p, size_t n) {
  const uint8_t *b = p;
  for (size_t i = 0; i < n; i++) printf("%02x", b[i]);
}

#define SIZE(T) printf("size." #T " %zu\n", sizeof(struct T))
#define OFF(T, F) printf("off." #T "." #F " %zu\n", offsetof(struct T, F))
#define IOCTL(N) printf("ioctl." #N " %lu\n", (unsigned long)(N))
#define CONST(C) printf("const." #C " %ld\n", (long)(C))

/* ------------------------------------------------------------------------------------------
 * layout
 * ---------------------------------------------------------------------------------------- */

static void print_layout(void) {
  SIZE(ioctl_evtchn_bind_interdomain);
  OFF(ioctl_evtchn_bind_interdomain, remote_domain);
  OFF(ioctl_evtchn_bind_interdomain, remote_port);
  SIZE(ioctl_evtchn_bind_unbound_port);
  OFF(ioctl_evtchn_bind_unbound_port, remote_domain);
  SIZE(ioctl_evtchn_unbind);
  OFF(ioctl_evtchn_unbind, port);
  SIZE(ioctl_evtchn_notify);
  OFF(ioctl_evtchn_notify, port);

  SIZE(ioctl_gntalloc_alloc_gref);
  OFF(ioctl_gntalloc_alloc_gref, domid);
  OFF(ioctl_gntalloc_alloc_gref, flags);
  OFF(ioctl_gntalloc_alloc_gref, count);
  OFF(ioctl_gntalloc_alloc_gref, index);
  OFF(ioctl_gntalloc_alloc_gref, gref_ids);
  SIZE(ioctl_gntalloc_dealloc_gref);
  OFF(ioctl_gntalloc_dealloc_gref, index);
  OFF(ioctl_gntalloc_dealloc_gref, count);
  SIZE(ioctl_gntalloc_unmap_notify);
  OFF(ioctl_gntalloc_unmap_notify, index);
  OFF(ioctl_gntalloc_unmap_notify, action);
  OFF(ioctl_gntalloc_unmap_notify, event_channel_port);

  SIZE(ioctl_gntdev_grant_ref);
  OFF(ioctl_gntdev_grant_ref, domid);
  OFF(ioctl_gntdev_grant_ref, ref);
  SIZE(ioctl_gntdev_map_grant_ref);
  OFF(ioctl_gntdev_map_grant_ref, count);
  OFF(ioctl_gntdev_map_grant_ref, pad);
  OFF(ioctl_gntdev_map_grant_ref, index);
  OFF(ioctl_gntdev_map_grant_ref, refs);
  SIZE(ioctl_gntdev_unmap_grant_ref);
  OFF(ioctl_gntdev_unmap_grant_ref, index);
  OFF(ioctl_gntdev_unmap_grant_ref, count);
  OFF(ioctl_gntdev_unmap_grant_ref, pad);
  SIZE(ioctl_gntdev_unmap_notify);
  OFF(ioctl_gntdev_unmap_notify, index);
  OFF(ioctl_gntdev_unmap_notify, action);
  OFF(ioctl_gntdev_unmap_notify, event_channel_port);
  SIZE(ioctl_gntdev_grant_copy);
  OFF(ioctl_gntdev_grant_copy, count);
  OFF(ioctl_gntdev_grant_copy, segments);
  SIZE(gntdev_grant_copy_segment);
  OFF(gntdev_grant_copy_segment, source);
  OFF(gntdev_grant_copy_segment, dest);
  OFF(gntdev_grant_copy_segment, len);
  OFF(gntdev_grant_copy_segment, flags);
  OFF(gntdev_grant_copy_segment, status);
  OFF(gntdev_grant_copy_segment, source.virt);
  OFF(gntdev_grant_copy_segment, source.foreign.ref);
  OFF(gntdev_grant_copy_segment, source.foreign.offset);
  OFF(gntdev_grant_copy_segment, source.foreign.domid);
  OFF(gntdev_grant_copy_segment, dest.virt);
  OFF(gntdev_grant_copy_segment, dest.foreign.ref);
  OFF(gntdev_grant_copy_segment, dest.foreign.offset);
  OFF(gntdev_grant_copy_segment, dest.foreign.domid);

  IOCTL(IOCTL_EVTCHN_BIND_INTERDOMAIN);
  IOCTL(IOCTL_EVTCHN_BIND_UNBOUND_PORT);
  IOCTL(IOCTL_EVTCHN_UNBIND);
  IOCTL(IOCTL_EVTCHN_NOTIFY);
  IOCTL(IOCTL_EVTCHN_RESET);
  IOCTL(IOCTL_GNTALLOC_ALLOC_GREF);
  IOCTL(IOCTL_GNTALLOC_DEALLOC_GREF);
  IOCTL(IOCTL_GNTALLOC_SET_UNMAP_NOTIFY);
  IOCTL(IOCTL_GNTDEV_MAP_GRANT_REF);
  IOCTL(IOCTL_GNTDEV_UNMAP_GRANT_REF);
  IOCTL(IOCTL_GNTDEV_SET_UNMAP_NOTIFY);
  IOCTL(IOCTL_GNTDEV_GRANT_COPY);

  CONST(GNTALLOC_FLAG_WRITABLE);
  CONST(UNMAP_NOTIFY_CLEAR_BYTE);
  CONST(UNMAP_NOTIFY_SEND_EVENT);
  CONST(GNTCOPY_source_gref);
  CONST(GNTCOPY_dest_gref);
  CONST(GNTST_okay);
  CONST(GNTST_general_error);
  CONST(GNTST_bad_domain);
  CONST(GNTST_bad_gntref);
  CONST(GNTST_bad_handle);
  CONST(GNTST_bad_virt_addr);
  CONST(GNTST_bad_dev_addr);
  CONST(GNTST_no_device_space);
  CONST(GNTST_permission_denied);
  CONST(GNTST_bad_page);
  CONST(GNTST_bad_copy_arg);
}

/* Tokenizer over one input line. */
static char *cursor;
static const char *current_line;

static char *word(void) {
  char *w = strtok_r(NULL, " \n", &cursor);
  if (!w) die("line too short", current_line);
  return w;
}

static unsigned long long num(void) {
  char *w = word(), *end;
  errno = 0;
  unsigned long long v = strtoull(w, &end, 10);
  if (errno || *end) die("bad number", w);
  return v;
}

static long long snum(void) {
  char *w = word(), *end;
  errno = 0;
  long long v = strtoll(w, &end, 10);
  if (errno || *end) die("bad number", w);
  return v;
}

/* One side of a copy segment: "v <addr>" (local pointer) or "f <ref> <offset> <domid>". */
static void copy_side(struct gntdev_grant_copy_segment *s, int dest) {
  char *k = word();
  if (!strcmp(k, "v")) {
    void *p = (void *)(uintptr_t)num();
    if (dest) s->dest.virt = p;
    else s->source.virt = p;
  } else if (!strcmp(k, "f")) {
    grant_ref_t ref = num();
    uint16_t offset = num();
    domid_t domid = num();
    if (dest) {
      s->dest.foreign.ref = ref;
      s->dest.foreign.offset = offset;
      s->dest.foreign.domid = domid;
    } else {
      s->source.foreign.ref = ref;
      s->source.foreign.offset = offset;
      s->source.foreign.domid = domid;
    }
  } else {
    die("copy side must be v or f", k);
  }
}

#define MAX(a, b) ((a) > (b) ? (a) : (b))

/*
 * "<struct> <field values...>" in declaration order (all fields, outputs and named pads
 * included; unnamed padding stays zero). The variable-length structs take count, then the
 * fixed fields, then count elements.
 */
static void encode_line(char *line) {
  static uint8_t buf[1 << 16];
  size_t n = 0;
  memset(buf, 0, sizeof buf);
  current_line = line;
  char *kind = strtok_r(line, " \n", &cursor);
  if (!kind) die("empty line", line);

  if (!strcmp(kind, "evtchn_bind_interdomain")) {
    struct ioctl_evtchn_bind_interdomain *s = (void *)buf;
    s->remote_domain = num();
    s->remote_port = num();
    n = sizeof *s;
  } else if (!strcmp(kind, "evtchn_bind_unbound_port")) {
    struct ioctl_evtchn_bind_unbound_port *s = (void *)buf;
    s->remote_domain = num();
    n = sizeof *s;
  } else if (!strcmp(kind, "evtchn_unbind")) {
    struct ioctl_evtchn_unbind *s = (void *)buf;
    s->port = num();
    n = sizeof *s;
  } else if (!strcmp(kind, "evtchn_notify")) {
    struct ioctl_evtchn_notify *s = (void *)buf;
    s->port = num();
    n = sizeof *s;
  } else if (!strcmp(kind, "gntalloc_alloc_gref")) {
    struct ioctl_gntalloc_alloc_gref *s = (void *)buf;
    s->domid = num();
    s->flags = num();
    s->count = num();
    s->index = num();
    n = MAX(sizeof *s, offsetof(struct ioctl_gntalloc_alloc_gref, gref_ids) + sizeof s->gref_ids[0] * s->count);
    if (n > sizeof buf) die("count too large", line);
    for (uint32_t i = 0; i < s->count; i++) s->gref_ids[i] = num();
  } else if (!strcmp(kind, "gntalloc_dealloc_gref")) {
    struct ioctl_gntalloc_dealloc_gref *s = (void *)buf;
    s->index = num();
    s->count = num();
    n = sizeof *s;
  } else if (!strcmp(kind, "gntalloc_unmap_notify")) {
    struct ioctl_gntalloc_unmap_notify *s = (void *)buf;
    s->index = num();
    s->action = num();
    s->event_channel_port = num();
    n = sizeof *s;
  } else if (!strcmp(kind, "gntdev_unmap_notify")) {
    struct ioctl_gntdev_unmap_notify *s = (void *)buf;
    s->index = num();
    s->action = num();
    s->event_channel_port = num();
    n = sizeof *s;
  } else if (!strcmp(kind, "gntdev_map_grant_ref")) {
    struct ioctl_gntdev_map_grant_ref *s = (void *)buf;
    s->count = num();
    s->pad = num();
    s->index = num();
    n = MAX(sizeof *s, offsetof(struct ioctl_gntdev_map_grant_ref, refs) + sizeof s->refs[0] * s->count);
    if (n > sizeof buf) die("count too large", line);
    for (uint32_t i = 0; i < s->count; i++) {
      s->refs[i].domid = num();
      s->refs[i].ref = num();
    }
  } else if (!strcmp(kind, "gntdev_unmap_grant_ref")) {
    struct ioctl_gntdev_unmap_grant_ref *s = (void *)buf;
    s->index = num();
    s->count = num();
    s->pad = num();
    n = sizeof *s;
  } else if (!strcmp(kind, "gntdev_grant_copy")) {
    struct ioctl_gntdev_grant_copy *s = (void *)buf;
    s->count = num();
    s->segments = (void *)(uintptr_t)num();
    n = sizeof *s;
  } else if (!strcmp(kind, "gntdev_grant_copy_segment")) {
    struct gntdev_grant_copy_segment *s = (void *)buf;
    copy_side(s, 0);
    copy_side(s, 1);
    s->len = num();
    s->flags = num();
    s->status = snum();
    n = sizeof *s;
  } else {
    die("unknown struct", kind);
  }
  if (strtok_r(NULL, " \n", &cursor)) die("trailing fields", current_line);
  printf("bytes ");
  hex(buf, n);
  printf("\n");
}

/* ------------------------------------------------------------------------------------------
 * xs
 * ---------------------------------------------------------------------------------------- */

#define XS(T) printf("xs." #T " %d\n", (int)(T))
#define ERRNO(E) printf("errno." #E " %d\n", E)

static void print_xs(void) {
  XS(XS_CONTROL);
  XS(XS_DIRECTORY);
  XS(XS_READ);
  XS(XS_GET_PERMS);
  XS(XS_WATCH);
  XS(XS_UNWATCH);
  XS(XS_TRANSACTION_START);
  XS(XS_TRANSACTION_END);
  XS(XS_INTRODUCE);
  XS(XS_RELEASE);
  XS(XS_GET_DOMAIN_PATH);
  XS(XS_WRITE);
  XS(XS_MKDIR);
  XS(XS_RM);
  XS(XS_SET_PERMS);
  XS(XS_WATCH_EVENT);
  XS(XS_ERROR);
  XS(XS_IS_DOMAIN_INTRODUCED);
  XS(XS_RESUME);
  XS(XS_SET_TARGET);
  XS(XS_RESET_WATCHES);
  XS(XS_DIRECTORY_PART);
  XS(XS_TYPE_COUNT);
  XS(XS_INVALID);
  XS(XENSTORE_PAYLOAD_MAX);
  XS(XENSTORE_ABS_PATH_MAX);
  XS(XENSTORE_REL_PATH_MAX);
  XS(XS_WATCH_PATH);
  XS(XS_WATCH_TOKEN);
  SIZE(xsd_sockmsg);
  OFF(xsd_sockmsg, type);
  OFF(xsd_sockmsg, req_id);
  OFF(xsd_sockmsg, tx_id);
  OFF(xsd_sockmsg, len);
  for (size_t i = 0; i < sizeof xsd_errors / sizeof xsd_errors[0]; i++) {
    printf("xsd_error.%s %d\n", xsd_errors[i].errstring, xsd_errors[i].errnum);
  }
  ERRNO(EPERM); ERRNO(ENOENT); ERRNO(ESRCH); ERRNO(EINTR); ERRNO(EIO); ERRNO(ENXIO);
  ERRNO(E2BIG); ERRNO(ENOEXEC); ERRNO(EBADF); ERRNO(ECHILD); ERRNO(EAGAIN); ERRNO(ENOMEM);
  ERRNO(EACCES); ERRNO(EFAULT); ERRNO(EBUSY); ERRNO(EEXIST); ERRNO(EXDEV); ERRNO(ENODEV);
  ERRNO(ENOTDIR); ERRNO(EISDIR); ERRNO(EINVAL); ERRNO(ENFILE); ERRNO(EMFILE); ERRNO(ENOTTY);
  ERRNO(EFBIG); ERRNO(ENOSPC); ERRNO(ESPIPE); ERRNO(EROFS); ERRNO(EPIPE); ERRNO(ERANGE);
  ERRNO(ENAMETOOLONG); ERRNO(ENOSYS); ERRNO(ENOTEMPTY); ERRNO(ELOOP); ERRNO(ENODATA);
  ERRNO(ETIME); ERRNO(EOVERFLOW); ERRNO(EBADFD); ERRNO(ENOTSOCK); ERRNO(EMSGSIZE);
  ERRNO(EOPNOTSUPP); ERRNO(EADDRINUSE); ERRNO(ECONNRESET); ERRNO(ENOBUFS); ERRNO(EISCONN);
  ERRNO(ENOTCONN); ERRNO(ESHUTDOWN); ERRNO(ETIMEDOUT); ERRNO(ECONNREFUSED); ERRNO(EALREADY);
  ERRNO(EINPROGRESS); ERRNO(EDQUOT); ERRNO(ECANCELED);
}

/* "type req_id tx_id len" → the header's bytes. */
static void header_line(char *line) {
  struct xsd_sockmsg m;
  memset(&m, 0, sizeof m);
  current_line = line;
  cursor = NULL;
  char *first = strtok_r(line, " \n", &cursor);
  if (!first) die("empty line", line);
  m.type = strtoul(first, NULL, 10);
  m.req_id = num();
  m.tx_id = num();
  m.len = num();
  printf("bytes ");
  hex(&m, sizeof m);
  printf("\n");
}

int main(int argc, char **argv) {
  static char line[1 << 17];
  int layout = argc == 2 && !strcmp(argv[1], "layout");
  int xs = argc == 2 && !strcmp(argv[1], "xs");
  if (!layout && !xs) {
    fprintf(stderr, "usage: %s layout|xs  (vectors on stdin)\n", argv[0]);
    return 2;
  }
  if (layout) print_layout();
  else print_xs();
  while (fgets(line, sizeof line, stdin)) {
    if (strlen(line) == sizeof line - 1) die("line too long", NULL);
    if (layout) encode_line(line);
    else header_line(line);
  }
  return fflush(stdout) == 0 ? 0 : 1;
}
