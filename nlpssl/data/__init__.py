"""nlpssl.data"""
