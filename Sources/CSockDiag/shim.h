// The kernel's socket-diagnostics interface (netlink NETLINK_SOCK_DIAG), which the Glibc
// module does not export, and the netlink macros Swift cannot import, as functions.
#include <linux/netlink.h>
#include <linux/sock_diag.h>
#include <linux/inet_diag.h>
#include <linux/rtnetlink.h>

static inline unsigned int csockdiag_nlmsg_align(unsigned int length) { return NLMSG_ALIGN(length); }
static inline unsigned int csockdiag_nlmsg_hdrlen(void) { return NLMSG_HDRLEN; }
static inline unsigned int csockdiag_rta_align(unsigned int length) { return RTA_ALIGN(length); }
static inline unsigned int csockdiag_rta_hdrlen(void) { return RTA_LENGTH(0); }
