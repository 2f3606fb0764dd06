"""The vocabulary of synthetic B2B marketing traffic, and how a visitor arrives: what the analytics
benchmark (loadtests/bench_analytics.py) and the tests' seeded generator (tests/analytics/generate.py)
both draw from. It lives here because a benchmark never imports from tests/.

The referrers cover every class the channel rules know (search, WeChat, social) and hosts of none,
one of them upper-case with a port, which a channel must drop.
"""

from __future__ import annotations

import random
from typing import Any

SECOND_MS = 1000
MINUTE_MS = 60_000
HOUR_MS = 3_600_000
DAY_MS = 86_400_000
HEARTBEAT_MS = 10_000

SITES = {"site_a": "www.cloudsec.example.cn", "site_b": "www.dataworks.example.cn", "site_c": "www.medlink.example.cn"}
PAGES = {
    "/": "首页",
    "/products/cloud-firewall": "云防火墙",
    "/products/data-platform": "数据中台",
    "/pricing": "价格",
    "/blog/zero-trust-101": "零信任入门",
    "/blog/b2b-growth": "B2B 增长手册",
    "/whitepaper/security-2025": "2025 数据安全白皮书",
    "/cases/bank": "银行客户案例",
    "/contact": "联系我们",
}
#: Page -> the file offered on it (path, name).
FILES = {
    "/whitepaper/security-2025": ("/files/security-whitepaper-2025.pdf", "2025数据安全白皮书.pdf"),
    "/cases/bank": ("/files/case-study-bank.docx", "银行客户案例.docx"),
    "/pricing": ("/files/price-list.xlsx", "价格表.xlsx"),
    "/products/data-platform": ("/files/data-platform-brochure.pdf", "数据中台产品手册.pdf"),
}
CODES = ("wechat_group_7", "wechat_moments_2", "wecom_sales_12", "poster_qr_3", "booth_expo_5", "partner_acme")
SHARERS = ("emp_042", "emp_007", "emp_118", "cust_3301")
CAMPAIGNS = (
    {"utm_source": "baidu", "utm_medium": "cpc", "utm_campaign": "brand_2025", "utm_term": "零信任"},
    {"utm_source": "baidu", "utm_medium": "cpc", "utm_campaign": "brand_2025", "utm_term": "数据安全"},
    {"utm_source": "wechat_ads", "utm_medium": "feed", "utm_campaign": "webinar_push", "utm_content": "banner_a"},
    {"utm_source": "linkedin", "utm_medium": "social", "utm_campaign": "cxo_series"},
    {"utm_source": "36kr", "utm_medium": "article", "utm_campaign": "pr_q3", "utm_term": "crm software"},
)
#: External referrers by the class the reference gives them; "other" ones are their own channel (one with an
#: upper-case host and a port, which the channel drops).
REFERRERS = {
    "search": ("https://www.baidu.com/link?url=Xk3fQ", "https://m.sogou.com/web/searchList.jsp?keyword=crm",
               "https://www.so.com/s?q=data", "https://m.sm.cn/s?q=security", "https://www.bing.com/search?q=b2b",
               "https://cn.bing.com/search?q=zero+trust", "https://www.google.com/", "https://www.google.com.hk/"),
    "wechat": ("https://mp.weixin.qq.com/s/3xAbcQ", "https://weixin.qq.com/", "https://qq.com/"),
    "social": ("https://weibo.com/u/5512", "https://m.weibo.cn/status/1", "https://www.zhihu.com/question/4521",
               "https://www.douyin.com/video/7301", "https://www.linkedin.com/feed/"),
    "other": ("https://partner.example.org/events/2025", "https://News.Example.NET:8443/tech/b2b",
              "https://www.36kr.com/p/1"),
}
#: How people arrive, by purpose of the visit: weights of each kind of arrival.
ARRIVALS = {
    "browse": {"code": 20, "utm": 15, "search": 15, "wechat": 8, "social": 8, "other": 7, "direct": 27},
    "register": {"code": 45, "utm": 10, "wechat": 15, "search": 5, "social": 5, "direct": 20},
    "live": {"reminder": 40, "code": 10, "wechat": 15, "direct": 35},
    "replay": {"replay_mail": 40, "code": 10, "wechat": 10, "direct": 40},
    "login": {"direct": 1},
}
KINDS = ("comment", "like", "lottery", "survey", "cta")
#: The CRM's next stage after each, with weights ('': the lead stays where it is): leads move on, skip stages, get
#: lost, go back to marketing (nurture) and come back as MQLs; a customer may get an upsell opportunity.
STAGE_FLOW: dict[str, dict[str, int]] = {
    "lead": {"mql": 50, "sql": 8, "lost": 10, "": 32},
    "mql": {"sal": 45, "sql": 12, "nurture": 20, "": 23},
    "sal": {"sql": 60, "nurture": 12, "lost": 10, "": 18},
    "sql": {"opportunity": 55, "won": 5, "lost": 15, "nurture": 8, "": 17},
    "opportunity": {"won": 55, "lost": 30, "": 15},
    "nurture": {"mql": 55, "": 45},
    "won": {"opportunity": 30, "": 70},
    "lost": {"nurture": 10, "": 90},
}
REASONS = {"lost": ("no budget", "chose a competitor", "project cancelled"),
           "nurture": ("not ready yet", "budget next quarter", "no decision maker")}


def arrival(rng: random.Random, purpose: str, codes: tuple[str, ...] = CODES,
            sharers: tuple[str, ...] = SHARERS) -> tuple[dict[str, str], str]:
    """(URL parameters, referrer) of an arrival for a visit of ``purpose`` (a key of ARRIVALS)."""
    weights = ARRIVALS[purpose]
    kind = rng.choices(list(weights), list(weights.values()))[0]
    if kind == "code":
        params = {"ch": rng.choice(codes)}
        if rng.random() < 0.5:
            params["sharer"] = rng.choice(sharers)
        return params, rng.choice(("", "", REFERRERS["wechat"][0]))  # WeChat's browser often sends none
    if kind == "utm":
        params = dict(rng.choice(CAMPAIGNS))
        return params, "https://www.baidu.com/link?url=Ad9" if params["utm_source"] == "baidu" else ""
    if kind == "reminder":
        return {"ch": "sms_reminder"}, ""
    if kind == "replay_mail":
        return {"ch": "edm_replay", "utm_source": "edm", "utm_medium": "email"}, ""
    if kind == "direct":
        return {}, ""
    return {}, rng.choice(REFERRERS[kind])


def stage_walk(rng: random.Random, limit: int = 10) -> list[str]:
    """A lead's stages as a CRM records them, at most ``limit``: from lead (sometimes straight in as an MQL) along
    STAGE_FLOW."""
    path = [rng.choices(("lead", "mql"), (85, 15))[0]]
    while len(path) < limit:
        flow = STAGE_FLOW[path[-1]]
        following = rng.choices(list(flow), list(flow.values()))[0]
        if not following:
            break
        path.append(following)
    return path


def stage_props(rng: random.Random, stage: str) -> dict[str, Any]:
    """A lead_stage's props: lost and nurture carry a reason; won and (its expected value) opportunity an amount, a
    few wins none or null (a deal without a value)."""
    props: dict[str, Any] = {"stage": stage}
    if stage in REASONS:
        props["reason"] = rng.choice(REASONS[stage])
    if stage == "opportunity" or (stage == "won" and rng.random() < 0.9):
        props["amount"] = rng.randint(5, 200) * 1000
    elif stage == "won" and rng.random() < 0.5:
        props["amount"] = None
    return props
