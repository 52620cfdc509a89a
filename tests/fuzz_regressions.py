"""Files the decoder fuzz loop (tests/fuzz.py, seed 19) found mishandled, kept byte for byte.

Each entry: base64 bytes, what the file gave before the fix, and the words it must give now
(None: it decodes). Generated from `corpus(200, 19)`; the names are its names.
"""

REGRESSIONS = {
    "jpeg-0016-delete.jpg": (
        "/9j/4AAQSkZJRgABAQAAAQABAAD/2wBDAAgGBgcGBQgHBwcJCQgKDBQNDAsLDBkSEw8UHRofHh0aHBwgJC4nICIsIxwcKDcpLDAxNDQ0Hyc5PT"
        "gyPC4zNDL/wAALCAAYABgBAREA/8QAHwAAAAABAgMEBQYHCAkKC//EALUQAAIBAwMCBAMFBQQEAAABfQECAwAEEQUSITFBBhNRYQcicRQygZGh"
        "CCNCscEVUtHwJDNicoIJChYXGBkaJSYnKCkqNDU2Nzg5OkNERUZHSElKU1RVVldYWVpjZGVmZ2hpanN0dXZ3eHl6g4SFhoeIiYqSk5SVlpeYmZ"
        "qio6Slpqeoqaqys7S1tre4ubrCw8TFxsfIycrS09TV1tfY2drh4uPk5ebn6Onq8fLz9PX29/j5+v/aAAgBAQAAPwDyC20piNyjlflBIratdKO7"
        "KoykDkda3LTRz8xI+vGe9RWellyreX8p9B+ldHY6Sx2gx4KjIJHOAK2ILKOL5PLYtwduMD+VQWGmKXHy4U4/LNdClkII0IQFmI29/rWpp+kKCD"
        "tXAGD7V//Z",
        'cannot be decoded ({{function_node __wrapped__ExtractJpegShape_device_/job:localhost/replica:0/task:',
        'corrupt JPEG data',
    ),
    "jpeg-0063-bitflip.jpg": (
        "/9j/4AAQSkZJRgABAQAAAQABAAD/2wBDAAgGBgcGBQgHBwcJCQgKDBQNDAsLDBkSEw8UHRofHh0aHBwgJC4nICIsIxwcKDcpLDAxNDQ0Hyc5PT"
        "gyPC4zNDL/wAALCAAYABgBAREA/8QAHwAAAQUBAQEBAQEAAAAAAAAAAAECAwQFBgcICQoL/8QAtRAAAgEDAwIEAwUFBAQAAAF9AQIDAAQRBRIh"
        "MUEGE1FhByJxFDKBkaEII0KxwRVS0fAkM2JyggkKFhcYGRolJicoKSo0NTY3ODk6Q0RFRkdISUpTVFVWV1hZWmNkZWZnaGtqc3R1dnd4eXqDhI"
        "WGh4iJipITlJWWl5iZmqKjpKWmp6ipqrKztLW2t6i5usLDxMXGx8jJytLT1NXW19rZ2uHi4+Tl5ufo6erx8vP09fb3+Pn6/9oACAEBIAA/APIL"
        "bSmI3KOV+UEitq10o7sqjKQOR1rctNHPzEj68Z71FZ6WXKt5fyn0H6V0djpLHaDHgqcgkc4ArYgso4vk8ti3B28wP5VBYaYpcfLhTj8s10KWQg"
        "jQhAWYjb3+tamn6QoIO1cAYPtX/9k=",
        'cannot be decoded ({{function_node __wrapped__DecodeAndCropJpeg_device_/job:localhost/replica:0/task',
        'corrupt JPEG data',
    ),
    "jpeg-0065-delete.jpg": (
        "/9j/4AD/2wBDAAgGBgcGBQgHBwcJCQgKDBQNDAsLDBkSEw8UHRofHh0aHBwgJC4nICIsIxwcKDcpLDAxNDQ0Hyc5PTgyPC4zNDL/wAALCAAYAB"
        "gBAREA/8QAHwAAAQUBAQEBAQEAAAAAAAAAAAECAwQFBgcICQoL/8QAtRAAAgEDAwIEAwUFBAQAAAF9AQIDAAQRBRIhMUEGE1FhByJxFDKBkaEI"
        "I0KxwRVS0fAkM2JyggkKFhcYGRolJicoKSo0NTY3ODk6Q0RFRkdISUpTVFVWV1hZWmNkZWZnaGlqc3R1dnd4eXqDhIWGh4iJipKTlJWWl5iZmq"
        "KjpKWmp6ipqrKztLW2t7i5usLDxMXGx8jJytLT1NXW19jZ2uHi4+Tl5ufo6erx8vP09fb3+Pn6/9oACAEBAAA/APILbSmI3KOV+UEitq10o7sq"
        "jKQOR1rctNHPzEj68Z71FZ6WXKt5fyn0H6V0djpLHaDHgqMgkc4ArYgso4vk8ti3B24wP5VBYaYpcfLhTj8s10KWQgjQhAWYjb3+tamn6QoIO1"
        "cAYPtX/9k=",
        'unreadable JPEG (cannot identify image file <_io.BytesIO object at 0x...>)',
        'corrupt JPEG header',
    ),
    "jpeg-0103-header.jpg": (
        "/9j/4AAQSkZJRgABAQAAAQABAAD/2wBDAAgGBgcGBQgHBwcJCQgKDBQNDAsLDBkSEw8UHRofHh0aHBwgJC4nICIsIxwcKDcpLDAxNDQ0Hyc5PT"
        "gyPC4zNDL/wAALCHUw//8BAREA/8QAHwAAAQUBAQEBAQEAAAAAAAAAAAECAwQFBgcICQoL/8QAtRAAAgEDAwIEAwUFBAQAAAF9AQIDAAQRBRIh"
        "MUEGE1FhByJxFDKBkaEII0KxwRVS0fAkM2JyggkKFhcYGRolJicoKSo0NTY3ODk6Q0RFRkdISUpTVFVWV1hZWmNkZWZnaGlqc3R1dnd4eXqDhI"
        "WGh4iJipKTlJWWl5iZmqKjpKWmp6ipqrKztLW2t7i5usLDxMXGx8jJytLT1NXW19jZ2uHi4+Tl5ufo6erx8vP09fb3+Pn6/9oACAEBAAA/APIL"
        "bSmI3KOV+UEitq10o7sqjKQOR1rctNHPzEj68Z71FZ6WXKt5fyn0H6V0djpLHaDHgqMgkc4ArYgso4vk8ti3B24wP5VBYaYpcfLhTj8s10KWQg"
        "jQhAWYjb3+tamn6QoIO1cAYPtX/9k=",
        'image too large (decompression bomb)',
        'JPEG image too large (65535x30000 pixels, at most 89,478,485)',
    ),
    "jpeg-0130-block.jpg": (
        "/9j/4AAQSkZJRgABAQAAAQABAAD/2wBDAAMCAgMCAgMDAwMEAwMEBQgFBQQEBQoHBwYIDAoMDAsKCwsNDhIQDQ4RDgsLEBYQERMUFRUVDA8XGB"
        "YUGBIUFRT/2wBDAQMEBAUEBQkFBQkUDQsNFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBT/wAARCAAY"
        "ABgDASIAAhEBAxEB/8QAHwAAAQUBAQEBAQEAAAAAAAAAAAECAwQFBgcICQoL/8QAtRAAAgEDAwIEAwUFBAQAAAF9AQIDAAQRBRIhMUEGE1FhBy"
        "JxFDKBkaEII0KxwRVS0fAkM2JyggkKFhcYGRolJicoKSo0NTY3ODk6Q0RFRkdISUpTVFVWV1hZWmNkZWZnaGlqc3R1dnd4eXqDhIWGh4iJipKT"
        "lJWWl5iZmqKjpKWmp6ipqrKztLW2t7i5usLDxMXGx8jJytLT1NXW19jZ2uHi4+Tl5ufo6erx8vP09fb3+Pn6/8QAHwEAAwEBAQEBAQEBAQAAAA"
        "AAAAECAwQFBgcICQoL/8QAtREAAgECBAQDBAcFBAQAAQJ3AAECAxEEBSExBhJBUQdhcRMiMoEIFEKRobHBCSMzUvAVYnLRChYkNOEl8RcYGRom"
        "JygpKjU2Nzg5OkNERUZHSElKU1RVVldYWVpjZGVmZ2hpanN0dXZ3eHl6goOEhYaHiImKkpOUlZaXmJmaoqOkpaanqKmqsrO0tba3uLm6wsPExc"
        "bHyMnK0tPU1dbX2Nna4uPk5ebn6Onq8vP09fb3+Pn6/9oADAMBAAIRAxEAPwD4C0XwBM0fmRIN0Z8sFlznOTwPzxz39ufRdB8AsJS8cMkTBDlB"
        "lsHnnGPYYHeu88OeAnuXhkNuTC3BKoMcD7pH49v0xXr3hT4eyN5SNamOSJN6MwG4BRjHXGT6enfGa8jLKcs0s3rcfC/FqpNXkeX+HfhwxMjsuC"
        "chwULjO45Ofofxx+BK+kNK8L2+nnyPsskkgIYwlQqjJGOMcY44757ZzRXViocMZfWlhsbikqkd0ozlZ9m4wkk11V7rqf1VlnFlaWGjKPXzivzM"
        "zwj4HiadB5e2FsYUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBT/wAARCAAYABgDASIAAhEBAxEB/8QAHwAAAWqLkSfbmnGLa87N2fR6n+WvC+Oryx"
        "Eacndf0ztPCHw7jjdG8uLCjDk4O0Dk5BGOvU89z2zRRRXJOdLKsNQhSpRlzK75ld/g0f1fluNr1KGstn/kf//Z",
        'decoded',
        None,
    ),
    "png-0135-delete.png": (
        "iVBORw0KGgoAAAANSUhEUgAAABgAAAAYCAAAAADFHGIkAAAByElEQVR4nAXBy47TMBQAUF/7Xr/tJE2bdioQSLAZib/g/5fsWCDxGjEzzNCkaR"
        "52zDkAIvRMRwaZ2+IkqldSIHbPKJOZNaplM2UlliwgpaMe9mCZAipa7FJKqKqnQzLXarsbOB7MITfTv+RO3hsfDOsM714LvAFI+xerOLhbs6WY"
        "19O4K6jg07MMdqOL4l4y8pPkWDHX13wzOmqi0KrAOJmXDtVcBjcg6Qy+3zpUIGrJ7rNVUulCmA27ca4e1dvMtqf7/OwoyIkpbHnmAbuXM2eoVa"
        "beqxLNGe4mMVi60g7h86xdkpGxajBIbnHlAIw1f1HavHoQEq8ymqTrZJe1Sl+OfNKdmjcJM8Wtl8cH4MX2uZ2wYUO3ug29DGM+mnfraB99YTUC"
        "b2MqwmkEpmdNLfyqYTdYrqiMKdCIk4h+Zf7H1wqMCIiyFjc/VnyLgrYgSe7Ryeg4nsbcSD12/saNAd5HhmTsa8NN7eUs7mhukYL9JqGSB1o6y6"
        "e5YidYIyyRXb83IhJelLACwzrquQXYJ7s2uc+l4whXUnzx7zniIOdjY3/OMpzLwuBDUnyjP50xAtZ1oUBaYy+kvJwe/gOWzLR9sPqYOgAAAABJ"
        "RU5ErkJggg==",
        'cannot be decoded ({{function_node __wrapped__DecodeImage_device_/job:localhost/replica:0/task:0/dev',
        'corrupt PNG data (checksum mismatch)',
    ),
    "webp-0040-header.webp": (
        "UklGRmABAABXRUJQVlA4IFQBAADQCACdASr/AAECPm0sk0YkIqGhKA1QgA2JbACZMoRwN41w5+4Riz0s4wIsA3DP0VTAdz03eb/mgweXpVCLMR"
        "lckcxrjNFEfzX/uoagYT8wAPr976bCUrAKn2Q324MfYfqCLr3nAzm2PyWChb4iBCqzWM5XXxiM/oejye2MglSYSAPkCmg3YVTe7ksG6F9/2o0G"
        "aZI21iu6N+S5vQpds0nu44vmlew4Em/pGAK1BsVzSsl5rujkeP2hA0j+qP526bR474etUH/iE1T/Jg2PUsl4ipzNmNXEVR3NZD2zZT/5H9lqAj"
        "8qD1rDGytGpwaZ5tEpQWxNAvYe7Vh+/i3gp5O5/2wnfpiUmei2X/4D/fNjWt1JQnbmVGEBV/2/3LEDf9bmAR1BRqUjlszOJyiaZKX3jukGin29"
        "afvPwdCr5WG/4vtXt+/r/e3jFZ6dA5ULk/zWAAAA",
        'cannot be decoded ({{function_node __wrapped__DecodeImage_device_/job:localhost/replica:0/task:0/dev',
        'corrupt WebP data',
    ),
    "tiff-0073-truncate.tif": (
        "SUkqAAgAAAAKAAABBAABAAAAGAAAAAEBBAABAAAAGAAAAAIBAwADAAAAhgAAAAMBAwABAAAAAQAAAAYBAwABAAAAAgAAABEBBAABAAAAjAAAAB"
        "UBAwABAAAAAwAAABYBBAABAAAAGAAAABcBBAABAAAAwAYAABwBAwABAAAAAQAAAAAAAAAIAAgACAABAAcLAAQjCwAOAAAMAAApAABADABWAARa"
        "AQBOAAJXAAB0AgRwAAmTABKcCQOSERe1DwSbAAekBAXGAADCABTMAwDvDwfLAAgMAhUAAgwUIgQWBQAYEQpBABk4HAA9DBNRAgBJEBRiABReAR"
        "JcDgWDCQ+UAB+eFBypFBCYCAeiDQuxABbMGRPeGiK/GBrrDhsDDwAI",
        'cannot be decoded (cannot decode image: image file is truncated (4 bytes not processed))',
        'corrupt TIFF data (data cut short)',
    ),
    "gif-0009-delete.gif": (
        "R0lGODdhGAAYAIYAAAAAADMAAGYAAJkAAMwAAP8AAAAzADMzAGYzAMwzAABmADNmAMxmAP9mAACZADOZAJmZAMyZAADMADPMAJnMAP/MAAD/AA"
        "AAMzMAM2YAM5kAM8wAM/8AMwAzMzMzM2YzM5kzM8wzMwBmMzNmM2ZmM5lmM8xmM/9mMwCZMzOZM5mZM8yZMwDMMzPMM2bMM5nMM8zMMzP/M2b/"
        "M5n/M5kAZjMzZmYzZpkzZswzZv8zZjNmZmZmZplmZsxmZgCZZjOZZmaZZsyZZv+ZZgDMZjPMZmbMZpnMZszMZjP/Zmb/Zpn/Zswzmf8zmTNmmW"
        "ZmmZlmmcxmmTOZmWaZmZmZmcyZmf+ZmTPMmWbMmZnMmczMmTP/mWZmzMxmzP9mzGaZzJmZzP+ZzDPMzGbMzJnMzMzMzP/MzGb/zMz/zJlm/8xm"
        "//9m/5mZ/2bM/5nM/8zM/8z//wAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAACwAAAAAGAAYAEAI/wABAAggMEAAAQIOIhwwQAPDAQ"
        "QiFiBgQIECDwsOjPDgoQSJHTc+POFx48kTKEuWoHTg4EGKFD+A/IgipSacMWPgQNipYkUQnwaCYjhgwAOCDAc+ZPgAoqkGECFwhOCQA4cDBSmw"
        "jvhBAsiOJkBqPpkChgwYN2HcMGgggUULty2IFLFy5cyZOBReUDDyIsiRLFTSqAFwIYCBAAcwBPiAQEAGAUwHgCAAYoPlqUWLLuDo4cMHEp5v3K"
        "DBA8QSHCmXMLEoQsHGEbB17NjhxKTJLmG8gBET5s3Vlyh+CP9RU8qXKWPIwGmjM4KJFSskSEBBJO4PulLqkjkDhwIFFUaCvP/IUiXLBAsxWgxB"
        "QkTLmTVrznh38UKJkSxZ0rBRM0fgYQBDHRTAYwI4NBlDGySwQQgFGEDUAQF0YJBnCHyggQYIPKVBCBuGQAAHQTl4gAcjHrAUU6HdEMINONzQAw"
        "44VHSAApvBRkINntnAA0gs3qASSktYNEIHItj4wWyzPVGSbVCEkZsYFrkG2wiyIVlbbU+AEQYZaZXhhgIOoCBCkSno8IMOQDjhxBRmleWGGxFE"
        "sMIJLKEAk3BAhFUcGcopJ6ecQQjhQAos2NnCTNlZIcUZY8gBxwsqwODTEUJkIZ0ELfhABBFXdLpoHGhA8MILMBhxxF9VpCGdW0PMRcQWZpwrIQ"
        "de9JmqBH5ppDGHBBawEMMQSVhhhRlrxLGGDC7MYAQXWWDBBhpp0FFBQAA7",
        'unreadable GIF (cannot identify image file <_io.BytesIO object at 0x...>)',
        'GIF with no frames',
    ),
    "gif-0016-delete.gif": (
        "R0lGODdhGAAYAIYAAAAAADMAAGYAAJkAAMwAAP8AAAAzADMzAGYzAMwzAABmADNmAMxmAP9mAACZADOZAJmZAMyZAADMADPMAJnMAP/MAAD/AA"
        "AAMzMAM2YAM5kAM8wAM/8AMwAzMzMzM2YzM5kzM8wzMwBmMzNmM2ZmM5lmM8xmM/9mMwCZMzOZM5mZM8yZMwDMMzPMM2bMM5nMM8zMMzP/M2b/"
        "M5n/M5kAZjMzZmYzZpkzZswzZv8zZjNmZmZmZplmZsxmZgCZZjOZZmaZZsyZZv+ZZgDMZjPMZmbMZpnMZszMZjP/Zmb/Zpn/Zswzmf8zmTNmmW"
        "ZmmZlmmcxmmTOZmWaZmZmZmcyZmf+ZmTPMmWbMmZnMmczMmTP/mWb/mZn/mZkzzMwzzGZmzJlmzMxmzP9mzGaZzJmZzP+ZzDPMzGbMzJnMzMzM"
        "zP/MzGb/zMz/zJlm/8xm//9m/5mZ/2bM/5nM/8zM/8z//wAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAACwAAAAAGAAYAEAI/wABAA"
        "ggMEAAAQIOIhwwQAPDAQQiFiBgQIECDwsOjPDgoQSJHTc+POFx48kTKEuWoHTg4EGKFD+A/IgipSacMWPgQNipYkUQnwaCYjhgwAOCDAc+ZPgA"
        "oqkGECFwhOCQA4cDBSmwjvhBAsiOJkBqPpkChgwYN2HcMGgggUULty2IFLFy5cyZOBReUDDyIsiRLFTSqAFwIYCBAAcwBPiAQEAGAUwHgCAAYo"
        "PlqUWLLuDo4cMHEp5v3KDBA8QSHCmXMLEoQsHGEbAuYbyAERPmzdWXKH4I/1FTypcpY8jAaaMzgokVKyRIQEEk7g+6UuqSOQOHAgUVRoK8/8hS"
        "JcsECzFaDEFCRMuZNWvOeHfxQomRLFnSsFEzR+BhAEMdFMBjAjg0GUMbJLBBCAUYQNQBAXRgkGcIfKCBBgg8pUEIG4ZAAAdBOXiAByMesBRTod"
        "0Qwg043NADDjhUdIACm8FGQg2e2cADSCzeoBJKS1g0Qgci2PjBbLM9UZJtUISRmxgWuQbbCLIhWVttT4ARBhlpleGGAg6gIEKRKejwgw5AOOHE"
        "FGaV5YYbEUSwwgksoQCTcECEVRwZyiknp5xBCOFACizY2cJM2VkhxRljyAHHCyrA4NMRQmQhnQQt+EAEEVd0umgcaEDwwgswGHHEX1WkIZ1bQ8"
        "xFxBZmnCshB170maoEfmmkMYcEFrAQwxBJWGGFGWvEsYYMLsxgBBdZYMEGGmnQUUFAADs=",
        'cannot be decoded ({{function_node __wrapped__DecodeImage_device_/job:localhost/replica:0/task:0/dev',
        'corrupt GIF data',
    ),
}
