"""nlpssl.models"""
