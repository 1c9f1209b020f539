/* See shim.h. Every function is a call to one DPDK inline function or macro. */
#include "shim.h"

#include <rte_prefetch.h>

const uint64_t OFFLOADD_RSS_IP = RTE_ETH_RSS_IP;
const uint64_t OFFLOADD_RSS_TCP = RTE_ETH_RSS_TCP;
const uint64_t OFFLOADD_RSS_UDP = RTE_ETH_RSS_UDP;
const uint32_t OFFLOADD_MQ_RX_RSS = RTE_ETH_MQ_RX_RSS;
const uint32_t OFFLOADD_MQ_RX_NONE = RTE_ETH_MQ_RX_NONE;
const uint16_t OFFLOADD_RETA_GROUP_SIZE = RTE_ETH_RETA_GROUP_SIZE;
const uint16_t OFFLOADD_PKTMBUF_HEADROOM = RTE_PKTMBUF_HEADROOM;
const uint32_t OFFLOADD_LCORE_ID_ANY = LCORE_ID_ANY;

int offloadd_errno(void) { return rte_errno; }

unsigned offloadd_lcore_id(void) { return rte_lcore_id(); }

uint16_t offloadd_rx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n)
{
	return rte_eth_rx_burst(port, queue, pkts, n);
}

uint16_t offloadd_tx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n)
{
	return rte_eth_tx_burst(port, queue, pkts, n);
}

int offloadd_pktmbuf_alloc_bulk(struct rte_mempool *mp, struct rte_mbuf **pkts, unsigned n)
{
	return rte_pktmbuf_alloc_bulk(mp, pkts, n);
}

struct rte_mbuf *offloadd_pktmbuf_alloc(struct rte_mempool *mp) { return rte_pktmbuf_alloc(mp); }

void offloadd_pktmbuf_free(struct rte_mbuf *m) { rte_pktmbuf_free(m); }

const uint8_t *offloadd_mbuf_data(const struct rte_mbuf *m, uint16_t *data_len,
                                  uint32_t *pkt_len, uint16_t *nb_segs)
{
	*data_len = m->data_len;
	*pkt_len = m->pkt_len;
	*nb_segs = m->nb_segs;
	return rte_pktmbuf_mtod(m, const uint8_t *);
}

uint8_t *offloadd_mbuf_append(struct rte_mbuf *m, uint16_t len)
{
	return (uint8_t *)rte_pktmbuf_append(m, len);
}

void offloadd_mbuf_prefetch_data(const struct rte_mbuf *m)
{
	rte_prefetch0(rte_pktmbuf_mtod(m, const void *));
}
