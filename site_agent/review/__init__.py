"""Output review: results held as shares until each reviewing site's DPO approves (``store``)."""
