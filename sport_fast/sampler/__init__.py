"""Stage 2, step sampling: the prefix-caching sampler (K siblings read one prefill), its decode paths and
attention, structured output, the OpenAI-compatible server over it, and the same interface over a remote server."""
