// The views' times are UTC: Date columns as 'YYYY-MM-DD', DateTime as 'YYYY-MM-DD hh:mm:ss[.mmm]'.
export const DAY_MS = 86400000

/** 'YYYY-MM-DD' of the UTC day holding `ms`. */
export const day_text = (ms) => new Date(ms).toISOString().slice(0, 10)

/** The start of a UTC day, in ms. */
export const day_ms = (day) => Date.parse(`${day}T00:00:00Z`)

/** A DateTime column's text, in ms. */
export const utc_ms = (text) => Date.parse(`${text.replace(' ', 'T')}Z`)
