/* offloadd's DPDK shim: what bindgen cannot bind.
 *
 * DPDK's fast path (rx/tx burst, mbuf alloc/free, data pointer, lcore id, rte_errno)
 * is static inline in the headers or a per-lcore (thread-local) variable; these are
 * real functions around them. RSS flag macros are built from RTE_BIT64(), which
 * bindgen cannot evaluate, so their values are exported as constants. */
#ifndef OFFLOADD_DPDK_SHIM_H
#define OFFLOADD_DPDK_SHIM_H

#include <stdint.h>

#include <rte_config.h>
#include <rte_dev.h>
#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_ethdev.h>
#include <rte_lcore.h>
#include <rte_mbuf.h>
#include <rte_mempool.h>

/* RSS hash types (rte_eth_rss_conf.rss_hf) and queue mode. */
extern const uint64_t OFFLOADD_RSS_IP;
extern const uint64_t OFFLOADD_RSS_TCP;
extern const uint64_t OFFLOADD_RSS_UDP;
extern const uint32_t OFFLOADD_MQ_RX_RSS;
extern const uint32_t OFFLOADD_MQ_RX_NONE;
extern const uint16_t OFFLOADD_RETA_GROUP_SIZE;
extern const uint16_t OFFLOADD_PKTMBUF_HEADROOM;
extern const uint32_t OFFLOADD_LCORE_ID_ANY;

/* rte_errno of the calling thread. */
int offloadd_errno(void);
/* rte_lcore_id(): LCORE_ID_ANY on a thread that is not an EAL or registered thread. */
unsigned offloadd_lcore_id(void);

uint16_t offloadd_rx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n);
uint16_t offloadd_tx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n);

/* 0 and n mbufs, or a negative errno and none. */
int offloadd_pktmbuf_alloc_bulk(struct rte_mempool *mp, struct rte_mbuf **pkts, unsigned n);
struct rte_mbuf *offloadd_pktmbuf_alloc(struct rte_mempool *mp);
void offloadd_pktmbuf_free(struct rte_mbuf *m);

/* The first segment's data and its length; *pkt_len is the whole packet, *nb_segs its
 * segment count. */
const uint8_t *offloadd_mbuf_data(const struct rte_mbuf *m, uint16_t *data_len,
                                  uint32_t *pkt_len, uint16_t *nb_segs);
/* rte_pktmbuf_append: room for len more bytes at the end, or NULL. */
uint8_t *offloadd_mbuf_append(struct rte_mbuf *m, uint16_t len);
/* Prefetch of the first cache line of the mbuf's data. */
void offloadd_mbuf_prefetch_data(const struct rte_mbuf *m);

#endif
