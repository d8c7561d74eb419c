"""Filter reasoning where it is produced: around a Python function, an `openai` client, a LangChain model.

    llm.py        wrap_llm(fn): a function returning text with think blocks, or a (reasoning, answer) pair
    openai.py     wrap_openai(client): `client.chat.completions.create(...)`, stream or not    (extra: openai)
    langchain.py  SafePathCallbackHandler: reasoning judged as a chat model streams it         (extra: langchain)

Each module imports its client library only when imported itself, so the core stays light.
"""
