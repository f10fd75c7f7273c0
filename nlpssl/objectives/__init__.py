"""nlpssl.objectives"""
