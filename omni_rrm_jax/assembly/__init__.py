"""What a task builds before its loop, from config sections: records, tokenizer,
media decoding and the model (`sources`, `models`, `media`, `inputs`).

Each function takes the sections it reads (`config.data`, `config.model`,
`config.media`) or plain values, never the whole config.
"""
