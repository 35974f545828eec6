/*
 * firmware-app: the INVITE screen.
 *
 * PJSUA sets up a call's media (an RTP and an RTCP socket) and takes one of its few call slots for every
 * INVITE before the application hears of it. A stream of INVITEs from anybody on the network therefore
 * exhausts the ioqueue (pj_ioqueue_register_sock2 asserts: the phone aborts) and the call slots (calls from
 * the PBX get 486). This module sits before the transaction layer and answers, statelessly and without
 * any allocation beyond the response, every dialog-creating INVITE that
 *   - comes from a source outside the trusted networks: 403 Forbidden;
 *   - is for a user that is not this phone's (the request URI's user part, or a tel: number): 404 Not Found.
 * The phone sets the networks and users from its configuration (security.trusted_sources, account.user
 * and account.aliases) through the functions below, called from Python with ctypes on the engine thread.
 *
 * This file is compiled into pjsua_core.c by image/pjsua2/recipe, so it lands in the PJSUA2 binding.
 */

#define FIRMWARE_SCREEN_MAX_NETS   64
#define FIRMWARE_SCREEN_MAX_USERS  16
#define FIRMWARE_SCREEN_USER_LEN   64

typedef struct firmware_net
{
    int             af;             /* pj_AF_INET() or pj_AF_INET6() */
    pj_uint8_t      addr[16];
    unsigned        prefix;
} firmware_net;

static struct firmware_screen
{
    pj_bool_t       registered;
    pj_bool_t       enabled;
    unsigned        net_cnt;
    firmware_net    nets[FIRMWARE_SCREEN_MAX_NETS];
    unsigned        user_cnt;
    char            users[FIRMWARE_SCREEN_MAX_USERS][FIRMWARE_SCREEN_USER_LEN];
    unsigned long   refused_source;
    unsigned long   refused_user;
    char            last_source[PJ_INET6_ADDRSTRLEN + 10];
} firmware_screen;

static pj_bool_t firmware_screen_on_rx_request(pjsip_rx_data *rdata);
static pj_status_t firmware_screen_on_unload(void);

static pjsip_module firmware_screen_mod =
{
    NULL, NULL,                             /* prev, next */
    { "mod-firmware-screen", 19 },          /* name */
    -1,                                     /* id */
    PJSIP_MOD_PRIORITY_TSX_LAYER - 1,       /* before transactions, dialogs and PJSUA */
    NULL, NULL, NULL,                       /* load, start, stop */
    &firmware_screen_on_unload,             /* libDestroy: a later libInit registers it again */
    &firmware_screen_on_rx_request,
    NULL, NULL, NULL, NULL                  /* on_rx_response, on_tx_*, on_tsx_state */
};

static pj_status_t firmware_screen_on_unload(void)
{
    firmware_screen.registered = PJ_FALSE;
    firmware_screen.enabled = PJ_FALSE;
    return PJ_SUCCESS;
}

static pj_bool_t firmware_addr_in_net(const pj_sockaddr *addr, const firmware_net *net)
{
    const pj_uint8_t *a;
    unsigned full, rest;

    if (addr->addr.sa_family != net->af)
        return PJ_FALSE;
    a = (const pj_uint8_t *)pj_sockaddr_get_addr(addr);
    full = net->prefix / 8;
    rest = net->prefix % 8;
    if (pj_memcmp(a, net->addr, full) != 0)
        return PJ_FALSE;
    if (rest) {
        pj_uint8_t mask = (pj_uint8_t)(0xFF << (8 - rest));
        if ((a[full] & mask) != (net->addr[full] & mask))
            return PJ_FALSE;
    }
    return PJ_TRUE;
}

static pj_bool_t firmware_source_trusted(const pj_sockaddr *addr)
{
    unsigned i;
    for (i = 0; i < firmware_screen.net_cnt; ++i) {
        if (firmware_addr_in_net(addr, &firmware_screen.nets[i]))
            return PJ_TRUE;
    }
    return PJ_FALSE;
}

static pj_bool_t firmware_user_known(const pj_str_t *user)
{
    unsigned i;
    /* The user part is case-sensitive (RFC 3261 19.1.4). */
    for (i = 0; i < firmware_screen.user_cnt; ++i) {
        if (pj_strcmp2(user, firmware_screen.users[i]) == 0)
            return PJ_TRUE;
    }
    return PJ_FALSE;
}

/* The user the request URI names: a sip:/sips: user part (any case of the scheme, as the parser already
 * folded it), or a tel: number. Anything else (no user part, another scheme) names nobody here. */
static pj_bool_t firmware_ruri_user(const pjsip_msg *msg, pj_str_t *user)
{
    const pjsip_uri *uri = (const pjsip_uri *)pjsip_uri_get_uri(msg->line.req.uri);

    if (PJSIP_URI_SCHEME_IS_SIP(uri) || PJSIP_URI_SCHEME_IS_SIPS(uri)) {
        *user = ((const pjsip_sip_uri *)uri)->user;
        return user->slen > 0;
    }
    if (PJSIP_URI_SCHEME_IS_TEL(uri)) {
        *user = ((const pjsip_tel_uri *)uri)->number;
        return user->slen > 0;
    }
    return PJ_FALSE;
}

static pj_bool_t firmware_screen_on_rx_request(pjsip_rx_data *rdata)
{
    const pjsip_msg *msg = rdata->msg_info.msg;
    pj_str_t user;

    if (!firmware_screen.enabled || msg->line.req.method.id != PJSIP_INVITE_METHOD)
        return PJ_FALSE;
    /* A re-INVITE belongs to a dialog: a stranger's one matches none and gets 481 without media. */
    if (rdata->msg_info.to->tag.slen)
        return PJ_FALSE;

    if (!firmware_source_trusted(&rdata->pkt_info.src_addr)) {
        ++firmware_screen.refused_source;
        pj_ansi_snprintf(firmware_screen.last_source, sizeof(firmware_screen.last_source), "%s:%d",
                         rdata->pkt_info.src_name, rdata->pkt_info.src_port);
        pjsip_endpt_respond_stateless(pjsua_var.endpt, rdata, PJSIP_SC_FORBIDDEN, NULL, NULL, NULL);
        return PJ_TRUE;
    }
    if (!firmware_ruri_user(msg, &user) || !firmware_user_known(&user)) {
        ++firmware_screen.refused_user;
        pjsip_endpt_respond_stateless(pjsua_var.endpt, rdata, PJSIP_SC_NOT_FOUND, NULL, NULL, NULL);
        return PJ_TRUE;
    }
    return PJ_FALSE;
}

/* --- the phone's side (ctypes, engine thread) ------------------------------------------------------ */

/* Forget every network and user; the screen stays as it was (enabled or not). */
PJ_DEF(void) firmware_screen_reset(void)
{
    firmware_screen.net_cnt = 0;
    firmware_screen.user_cnt = 0;
}

/* Trust INVITEs from ADDR/PREFIX (ADDR: 4 or 16 bytes in network order, as AF says: 4 or 6). */
PJ_DEF(pj_status_t) firmware_screen_add_net(int family, const pj_uint8_t *addr, unsigned prefix)
{
    firmware_net *net;
    unsigned len = family == 6 ? 16 : 4;

    if ((family != 4 && family != 6) || prefix > len * 8)
        return PJ_EINVAL;
    if (firmware_screen.net_cnt == FIRMWARE_SCREEN_MAX_NETS)
        return PJ_ETOOMANY;
    net = &firmware_screen.nets[firmware_screen.net_cnt++];
    net->af = family == 6 ? pj_AF_INET6() : pj_AF_INET();
    pj_bzero(net->addr, sizeof(net->addr));
    pj_memcpy(net->addr, addr, len);
    net->prefix = prefix;
    return PJ_SUCCESS;
}

/* Let INVITEs for USER ring the phone (the account's user, or an alias). */
PJ_DEF(pj_status_t) firmware_screen_add_user(const char *user)
{
    pj_size_t len = pj_ansi_strlen(user);

    if (len == 0 || len >= FIRMWARE_SCREEN_USER_LEN)
        return PJ_EINVAL;
    if (firmware_screen.user_cnt == FIRMWARE_SCREEN_MAX_USERS)
        return PJ_ETOOMANY;
    pj_ansi_strxcpy(firmware_screen.users[firmware_screen.user_cnt++], user, FIRMWARE_SCREEN_USER_LEN);
    return PJ_SUCCESS;
}

/* Start (or stop) screening; the first start registers the module with PJSUA's endpoint. */
PJ_DEF(pj_status_t) firmware_screen_enable(pj_bool_t enabled)
{
    if (enabled && !firmware_screen.registered) {
        pj_status_t status;
        if (!pjsua_var.endpt)
            return PJ_EINVALIDOP;
        status = pjsip_endpt_register_module(pjsua_var.endpt, &firmware_screen_mod);
        if (status != PJ_SUCCESS)
            return status;
        firmware_screen.registered = PJ_TRUE;
    }
    firmware_screen.enabled = enabled;
    return PJ_SUCCESS;
}

/* How many INVITEs were refused: WHICH 0 for untrusted sources, 1 for unknown users. */
PJ_DEF(unsigned long) firmware_screen_refused(int which)
{
    return which == 0 ? firmware_screen.refused_source : firmware_screen.refused_user;
}

/* "ip:port" of the last untrusted source refused ("" before the first). */
PJ_DEF(const char *) firmware_screen_last_source(void)
{
    return firmware_screen.last_source;
}
