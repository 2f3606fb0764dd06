// Every label the dashboard shows, in English and Chinese (the README's terms: 报名, 参会率, 完播率, 第一来源 ...).
// The choice is remembered in localStorage and set on <html lang>, which picks the CJK font.

const LABELS = {
  // app
  other_lang: ['中文', 'EN'],
  user: ['User', '用户名'],
  password: ['Password', '密码'],
  login: ['Log in', '登录'],
  logout: ['Log out', '退出'],
  session_expired: ['Your session has expired: please log in again.', '会话已过期，请重新登录。'],
  site: ['Site', '站点'],
  from: ['From', '开始日期'],
  to: ['To', '结束日期'],
  loading: ['Loading…', '加载中…'],
  csv: ['Export CSV', '导出 CSV'],
  no_rows: ['Nothing in this range yet.', '该时间段内暂无数据。'],
  all_time: ['All time: these figures do not depend on the date range.', '全部时间：这些数据不受日期范围影响。'],
  no_sites: ['No site to show', '没有可查看的站点'],
  no_sites_help: ['Your account may read no site. Ask an admin to add one to your [[users]] entry.',
    '你的账号没有可读的站点，请管理员在配置的 [[users]] 中为你添加站点。'],
  page_overview: ['Overview', '概览'],
  page_live: ['Live streams', '直播'],
  page_attribution: ['Attribution', '归因'],
  page_funnels: ['Funnels', '转化漏斗'],
  page_lifecycle: ['Lifecycle & revenue', '线索生命周期与收入'],
  page_content: ['Content', '内容'],
  // empty states: what to do next
  no_events: ['No events yet', '还没有事件'],
  no_events_help: ['Nothing to show. If the site sends no events yet, paste the snippet (your gateway serves it at '
    + '/sdk/snippet.html: fill in the gateway\'s URL and the site\'s write key) into the <head> of every page; if it '
    + 'does, pick a longer date range.',
  '暂无数据。如果站点还没有发送事件，请将接入代码（网关的 /sdk/snippet.html，填入网关地址和站点的 write key）粘贴到每个页面的 '
    + '<head> 中；如果已经接入，请选择更长的日期范围。'],
  no_streams: ['No live streams yet', '还没有直播'],
  no_streams_help: ['A stream appears once your player page sends live_join events with props.stream_id: bind '
    + 'the player with clicktrail(\'watch\', \'#player\', { stream_id: \'webinar-2026-12\' }) (see the SDK\'s '
    + 'README), or record registrations with clicktrail(\'register\', \'webinar-2026-12\').',
  '播放页发送带 props.stream_id 的 live_join 事件后，这里就会出现直播：用 clicktrail(\'watch\', \'#player\', '
    + '{ stream_id: \'webinar-2026-12\' }) 绑定播放器（见 SDK 的 README），报名用 clicktrail(\'register\', '
    + '\'webinar-2026-12\') 记录。'],
  no_conversions: ['No conversions in this range', '该时间段内没有转化'],
  no_conversions_help: ['Pick another conversion or a longer range. Registrations, forms and downloads come '
    + 'from the SDK; lead stages from your CRM (lead_stage events).',
  '请选择其他转化事件或更长的时间段。报名、表单和下载来自 SDK；线索阶段来自 CRM（lead_stage 事件）。'],
  no_steps: ['Pick the funnel\'s steps', '请选择漏斗步骤'],
  no_steps_help: ['Type event names separated by commas, or click the events in use above.',
    '输入以逗号分隔的事件名，或点击上方正在使用的事件。'],
  no_funnel: ['Nobody reached the first step in this range', '该时间段内没有人到达第一步'],
  no_funnel_help: ['Check the first step\'s name, or choose a longer range.', '请检查第一步的事件名，或选择更长的时间段。'],
  no_leads: ['No leads in this range', '该时间段内没有线索'],
  no_leads_help: ['Leads come from form submissions and from your CRM\'s lead_stage events (lead, mql, sal, sql, '
    + 'opportunity, won); channel costs are imported with `python -m gateway costs import`.',
  '线索来自表单提交和 CRM 的 lead_stage 事件（lead、mql、sal、sql、opportunity、won）；渠道成本用 '
    + '`python -m gateway costs import` 导入。'],
  // overview
  visitors: ['Visitors', '访客数'],
  sessions: ['Sessions', '访问次数'],
  registrations: ['Registrations', '报名数'],
  new_leads: ['New leads', '新增线索'],
  bounce_rate: ['Bounce rate', '跳出率'],
  registrations_last_touch: ['Registrations (last touch)', '报名（末次触点）'],
  new_leads_first_touch: ['New leads (first touch)', '新增线索（第一来源）'],
  vs_previous: ['previous range:', '上一周期：'],
  sessions_by_channel: ['Sessions by day and channel', '每日访问（按渠道）'],
  top_channels: ['Top channels', '主要渠道'],
  top_sharers: ['Top sharers (registrations, first touch)', '分享人排行（报名，第一来源）'],
  registrations_credited: ['Registrations', '报名'],
  // live
  stream: ['Stream', '直播'],
  live_now: ['Live now', '直播中'],
  ended: ['Ended', '已结束'],
  registrants: ['Registrants', '报名人数'],
  attendees: ['Attendees', '参会人数'],
  attendance_rate: ['Attendance rate', '参会率'],
  completed: ['Completed live', '完整观看直播'],
  completed_rate: ['Completed / attendees', '完播率（参会者）'],
  live_viewers: ['Live viewers', '直播观看人数'],
  replay_viewers: ['Replay viewers', '回放观看人数'],
  attended: ['Attended live', '参会'],
  no_show: ['No-show', '未到场'],
  yes: ['yes', '是'],
  no: ['no', '否'],
  viewers: ['Viewers', '观看人数'],
  completion_rate: ['Completion rate', '完播率'],
  peak_concurrency: ['Peak concurrency', '观看峰值'],
  avg_watch_ms: ['Avg. watch time', '人均观看时长'],
  interaction_rate: ['Interaction rate', '互动率'],
  no_shows: ['No-shows', '未到场'],
  no_show_replay_viewers: ['No-shows who watched the replay', '未到场但看了回放'],
  concurrency: ['Concurrent viewers by minute', '同时在线人数（每分钟）'],
  retention: ['Retention: share of views still watching', '留存曲线：仍在观看的比例'],
  watch_distribution: ['Watch time: persons by minutes watched', '观看时长分布'],
  minutes_watched: ['minutes', '分钟'],
  minute: ['minute', '分钟'],
  live: ['Live', '直播'],
  replay: ['Replay', '回放'],
  interactions_by_kind: ['Interactions by kind', '互动（按类型）'],
  kind: ['Kind', '类型'],
  interactions: ['Interactions', '互动次数'],
  interactors: ['Interactors', '互动人数'],
  registrant_journey: ['Registrant journey', '报名者旅程'],
  noshow_only: ['No-shows only (registered, did not attend live)', '仅看未到场（报名但未参加直播）'],
  person: ['Person', '用户'],
  registered_at: ['Registered', '报名时间'],
  registration_channel: ['Registration channel', '报名渠道'],
  first_touch_channel: ['First touch', '第一来源'],
  live_watch: ['Live watch time', '直播观看时长'],
  replay_watch: ['Replay watch time', '回放观看时长'],
  pages_after: ['Pages after', '之后浏览页数'],
  downloads_after: ['Downloads after', '之后下载数'],
  forms_after: ['Forms after', '之后表单数'],
  // attribution
  conversion: ['Conversion', '转化事件'],
  model: ['Model', '归因模型'],
  registration: ['Registration', '报名'],
  form_submit: ['Form submission', '表单提交'],
  download: ['Download', '下载'],
  'lead_stage:mql': ['Lead stage: MQL', '线索阶段：MQL'],
  'lead_stage:sal': ['Lead stage: SAL', '线索阶段：SAL'],
  'lead_stage:sql': ['Lead stage: SQL', '线索阶段：SQL'],
  'lead_stage:opportunity': ['Lead stage: opportunity', '线索阶段：商机'],
  'lead_stage:won': ['Lead stage: won', '线索阶段：赢单'],
  first_touch: ['First touch', '首次触点'],
  last_touch: ['Last touch', '末次触点'],
  linear: ['Linear', '线性'],
  u_shaped: ['U-shaped', 'U 型'],
  time_decay: ['Time decay', '时间衰减'],
  by_channel: ['By channel', '按渠道'],
  by_sharer: ['By sharer', '按分享人'],
  channel: ['Channel', '渠道'],
  sharer: ['Sharer', '分享人'],
  conversions: ['Conversions (credit)', '转化（归因值）'],
  // funnels
  steps: ['Steps', '步骤'],
  window: ['Window', '转化窗口'],
  days_n: [(n) => `${n} days`, (n) => `${n} 天`],
  events_in_use: ['Events in use:', '正在使用的事件：'],
  funnel: ['Funnel', '漏斗'],
  by_first_touch_channel: ['By first-touch channel', '按第一来源'],
  step: ['Step', '步骤'],
  step_name: ['Event', '事件'],
  persons: ['Persons', '人数'],
  conversion_from_previous: ['From previous step', '步骤转化率'],
  conversion_from_first: ['From first step', '总转化率'],
  median_from_previous: ['Median time from previous', '转化时长中位数'],
  // lifecycle
  lead_funnel: ['Lead funnel against industry references (leads who entered in the range)',
    '线索漏斗 vs 行业参考（该时间段内进入的线索）'],
  stage: ['Stage', '阶段'],
  stage_lead: ['Leads', '线索'],
  stage_mql: ['MQL', '市场认可线索 MQL'],
  stage_sal: ['SAL', '销售接受线索 SAL'],
  stage_sql: ['SQL', '销售认可线索 SQL'],
  stage_opportunity: ['Opportunity', '商机'],
  stage_won: ['Won', '赢单'],
  reference_conversion: ['Conversion over the reference span', '参考区间转化率'],
  reference_rate: ['Industry reference', '行业参考'],
  median_days_from_previous: ['Median days from previous', '阶段停留天数（中位数）'],
  lost: ['Lost here', '在此阶段输单'],
  recycling: ['Recycling: sent back to nurture', '返回 MA 重新培育'],
  from_stage: ['Reached before', '培育前阶段'],
  nurtured: ['Nurtured', '返回培育人数'],
  returned: ['Came back', '重新成为 MQL'],
  return_rate: ['Return rate', '回流率'],
  median_days_to_return: ['Median days to return', '回流天数（中位数）'],
  channel_roi: ['Channel ROI and cost per lead', '渠道 ROI 与线索成本'],
  cost: ['Cost', '渠道成本'],
  cpl: ['CPL', '线索成本 CPL'],
  opportunities: ['Opportunities', '商机'],
  won_revenue: ['Won revenue', '赢单金额'],
  roi: ['ROI', '投资回报率'],
  stream_influence: ['Pipeline influence of a stream', '直播对销售管道的影响'],
  category: ['Viewers who were', '观众类型'],
  category_customer: ['Customers', '老客户'],
  category_existing_lead: ['Existing leads', '存量线索'],
  category_new: ['New', '新线索'],
  opportunity_rate: ['Opportunity rate', '商机转化率'],
  // content
  pages_by_read_through: ['Pages by read-through', '页面完读率'],
  page: ['Page', '页面'],
  views: ['Views', '浏览量'],
  readers: ['Readers', '阅读人数'],
  avg_engaged: ['Avg. reading time', '平均阅读时长'],
  read_through_rate: ['Read-through rate', '完读率'],
  downloads_by_file: ['Downloads by file', '资料下载'],
  file: ['File', '资料'],
  downloads: ['Downloads', '下载次数'],
  sharer_leaderboard: ['Sharer leaderboard', '分享人排行'],
  leads: ['Leads', '线索数'],
}

const KEY = 'clicktrail.lang'
let current = localStorage.getItem(KEY) === 'zh' ? 'zh' : 'en'
document.documentElement.lang = current === 'zh' ? 'zh-CN' : 'en'

export const lang = () => current

export function set_lang(value) {
  current = value
  localStorage.setItem(KEY, value)
  document.documentElement.lang = value === 'zh' ? 'zh-CN' : 'en'
}

/** The label of `key` in the current language (the key itself when it has none, so a gap shows). */
export function t(key, ...args) {
  const label = LABELS[key]?.[current === 'zh' ? 1 : 0] ?? key
  return typeof label === 'function' ? label(...args) : label
}
